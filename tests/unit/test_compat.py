"""The faust-streaming version gate: the patches in streams/compat.py run only on releases they were tested on."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest

from streams import compat
from streams.settings import Settings
from streams.startup import run_worker
from tests.conftest import REPO


@pytest.mark.parametrize("found", ["0.15.3", "0.15.9", "0.15.3.post1", "0.15.3+local.1"])
def test_tested_releases_are_accepted(found: str) -> None:
    assert compat.check_faust_version(found) == found


@pytest.mark.parametrize("found", ["0.15.2", "0.15.3rc1", "0.16.0", "0.16.0rc1", "0.11.3", "1.0", "none"])
def test_other_releases_are_refused_naming_the_version_and_the_range(found: str) -> None:
    with pytest.raises(compat.UnsupportedFaustError) as refused:
        compat.check_faust_version(found)
    message = str(refused.value)
    assert f"faust-streaming {found} is installed" in message
    assert compat.FAUST_SUPPORTED_TEXT in message
    assert "\n" not in message


def test_the_installed_release_is_supported_and_pinned_to_the_same_range() -> None:
    compat.check_faust_version()  # the test environment itself
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if re.match(r"faust-streaming\b", d)]
    assert pins == [f"faust-streaming{compat.FAUST_SUPPORTED_TEXT}"]


def test_a_worker_with_another_faust_stops_at_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before ports, broker or model: nothing listens at this broker, and the check still answers first."""
    real = metadata.version
    monkeypatch.setattr(compat.metadata, "version", lambda name: "0.16.2" if name == "faust-streaming" else real(name))
    settings = Settings.load({}, {"broker": "127.0.0.1:1"})
    assert run_worker(settings, broker_wait_s=0.1) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "faust-streaming 0.16.2 is installed" in err and ">=0.15.3,<0.16" in err


def test_the_version_check_imports_no_faust() -> None:
    """An untested release may lack the private names patched here: the check must not need them."""
    code = "import sys, streams.compat as c; c.check_faust_version(); print('faust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
