"""Kafka TLS and SASL settings map to both clients; secrets are never printed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from retention_model.errors import SettingsError
from streams.cli import main as cli
from streams.kafka import client_config, faust_credentials
from streams.settings import Settings

SECRET = "s3cr3t-do-not-print"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=retention-test", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_plaintext_is_the_default() -> None:
    settings = Settings.load({})
    assert client_config(settings) == {"bootstrap.servers": "127.0.0.1:9092"}
    assert faust_credentials(settings) is None


def test_sasl_ssl_maps_to_librdkafka_and_faust(tls_files: tuple[Path, Path]) -> None:
    cert, _ = tls_files
    env = {
        "RETENTION_BROKER": "kafka-1:9093,kafka-2:9093",
        "RETENTION_SECURITY_PROTOCOL": "SASL_SSL",
        "RETENTION_SASL_MECHANISM": "SCRAM-SHA-512",
        "RETENTION_SASL_USERNAME": "retention",
        "RETENTION_SASL_PASSWORD": SECRET,
        "RETENTION_SSL_CAFILE": str(cert),
    }
    settings = Settings.load(env)
    assert client_config(settings) == {
        "bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "retention",
        "sasl.password": SECRET,
        "ssl.ca.location": str(cert),
    }
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("retention", SECRET)
    assert credentials.ssl_context is not None
    assert SECRET not in repr(settings) and SECRET not in repr(credentials)


def test_mutual_tls(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    settings = Settings.load(
        {
            "RETENTION_SECURITY_PROTOCOL": "SSL",
            "RETENTION_SSL_CAFILE": str(cert),
            "RETENTION_SSL_CERTFILE": str(cert),
            "RETENTION_SSL_KEYFILE": str(key),
        }
    )
    config = client_config(settings)
    assert config["security.protocol"] == "SSL"
    assert config["ssl.certificate.location"] == str(cert) and config["ssl.key.location"] == str(key)
    assert "sasl.username" not in config
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SSL"


def test_sasl_without_credentials_is_refused_without_echoing_secrets() -> None:
    with pytest.raises(SettingsError, match="needs RETENTION_SASL_USERNAME and RETENTION_SASL_PASSWORD") as info:
        Settings.load({"RETENTION_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RETENTION_SASL_PASSWORD": SECRET})
    assert SECRET not in str(info.value)


def test_missing_tls_file_and_half_a_key_pair(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"RETENTION_SSL_CAFILE.*readable file"):
        Settings.load({"RETENTION_SECURITY_PROTOCOL": "SSL", "RETENTION_SSL_CAFILE": str(tmp_path / "nope.pem")})
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError, match="go together"):
        Settings.load({"RETENTION_SSL_CERTFILE": str(cert)})


def test_effective_settings_mask_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RETENTION_SASL_USERNAME", "retention")
    monkeypatch.setenv("RETENTION_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("RETENTION_EXPORT_KEY", SECRET + "-export")
    assert cli(["settings", "--effective"]) == 0
    out = capsys.readouterr().out
    assert "RETENTION_SASL_PASSWORD=***" in out
    assert "RETENTION_EXPORT_KEY=***" in out
    assert SECRET not in out


def test_pseudonyms_are_keyed_stable_and_replace_every_user_id() -> None:
    from streams.export import pseudonymise, pseudonymise_record

    key = b"k1"
    assert pseudonymise("u1", key) == pseudonymise("u1", key)  # stable: exports still join
    assert pseudonymise("u1", key) != pseudonymise("u2", key)
    assert pseudonymise("u1", key) != pseudonymise("u1", b"k2")  # keyed: no key, no lookup table
    decision = {"decision_id": "d", "user_id": "u000166", "intervention": {"user_id": "u000166", "kind": "coupon"}}
    hidden = pseudonymise_record(decision, key)
    assert "u000166" not in str(hidden)
    assert hidden["user_id"] == hidden["intervention"]["user_id"] == pseudonymise("u000166", key)
    assert decision["user_id"] == "u000166"  # the input is left alone


def test_export_refuses_to_pseudonymise_without_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["export", "decisions", "--pseudonymise", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "RETENTION_EXPORT_KEY" in capsys.readouterr().err
