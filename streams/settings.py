"""Settings: one typed, frozen object read from ``RETENTION_*`` variables and flags.

Every setting is declared once below with its type, default, allowed values and
help; the environment names, the CLI flags, the validation messages and the
README table are all derived from these declarations. A wrong value fails at
start with the setting, the value and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from retention_model.errors import SettingsError
from retention_model.policy.config import PolicyConfig, PolicyFileError, load_policy

__all__ = ["BUNDLED_MODEL", "SECRETS", "Settings", "add_settings_flags", "allowed_values"]

BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "retention_model" / "bundled"
ENV_PREFIX = "RETENTION_"


def _setting(
    default: Any, help: str, *, choices: tuple[str, ...] = (), lo: float | None = None, hi: float | None = None
) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "lo": lo, "hi": hi})


@dataclass(frozen=True)
class Settings:
    """Runtime settings of the worker, the demo and the tools around them."""

    broker: str = _setting("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated host:port")
    broker_kind: str = _setting(
        "kafka",
        "What the broker is: tansu turns on fixes for the embedded broker (the worker detects it by itself)",
        choices=("kafka", "tansu"),
    )
    security_protocol: str = _setting(
        "PLAINTEXT", "How clients talk to Kafka", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    )
    sasl_mechanism: str = _setting(
        "PLAIN", "SASL mechanism (with SASL_*)", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    )
    sasl_username: str = _setting("", "SASL user name (with SASL_*)")
    sasl_password: str = field(
        default="",
        repr=False,  # never in a repr, a log line or an error message
        metadata={"help": "SASL password (with SASL_*); never printed", "choices": (), "lo": None, "hi": None},
    )
    export_key: str = field(
        default="",
        repr=False,
        metadata={
            "help": "Key that pseudonymises user ids in `retention export --pseudonymise` (HMAC-SHA256); never printed",
            "choices": (),
            "lo": None,
            "hi": None,
        },
    )
    ssl_cafile: str = _setting("", "CA bundle for TLS (with SSL / SASL_SSL); empty: the system's")
    ssl_certfile: str = _setting("", "Client certificate for mutual TLS (optional)")
    ssl_keyfile: str = _setting("", "Client private key for mutual TLS (optional)")
    app_id: str = _setting("retention", "Consumer group and Faust application id")
    events_topic: str = _setting("user-events", "Topic of behaviour events, keyed by user_id")
    dlq_topic: str = _setting("user-events.dlq", "Dead-letter topic for events that fail decoding")
    scores_topic: str = _setting("retention.scores", "Topic of every churn score")
    coupon_topic: str = _setting("retention.interventions.coupon", "Topic of coupon interventions")
    recommendation_topic: str = _setting(
        "retention.interventions.recommendation", "Topic of recommendation interventions"
    )
    decisions_topic: str = _setting(
        "retention.decisions", "Topic of every policy decision: sent, held out or suppressed, with the reason"
    )
    erasures_topic: str = _setting(
        "retention.erasures",
        "Topic of erasure confirmations: one per `retention forget` request (user, request id, time, what was removed)",
    )
    outcomes_topic: str = _setting(
        "retention.outcomes",
        "Topic of resolved outcomes: a sample of scores, each with whether the user purchased within the model's"
        " horizon (see RETENTION_OUTCOME_SAMPLE)",
    )
    erasure_requests_topic: str = _setting(
        "retention.erasure-requests",
        "Topic a privacy system writes erasure requests to: the worker forwards each to the events topic (empty: none)",
    )
    state_ttl_days: float = _setting(
        400.0,
        "Users silent this long in event time are dropped from state and timers, with changelog tombstones (0: never)",
        lo=0.0,
        hi=36_500.0,
    )
    state_cache_users: int = _setting(
        20_000, "Decoded user states kept between batches (~5 KB each): active users skip decoding", lo=0, hi=10**7
    )
    partitions: int = _setting(4, "Partitions of the events topic and the state changelog", lo=1, hi=1024)
    model_path: str = _setting(str(BUNDLED_MODEL), "Model bundle folder, or a registry folder (newest bundle)")
    model_reload_s: float = _setting(
        30.0, "How often to look for a newer bundle in the model path and load it, in s (0: never)", lo=0.0, hi=86_400
    )
    model_device: str = _setting("auto", "Where the model runs", choices=("auto", "cpu", "gpu"))
    shadow_model_path: str = _setting(
        "",
        "A second bundle scored in shadow beside the live one: its scores are published and measured, never acted on",
    )
    drift_window: int = _setting(
        20_000,
        "Feature drift (PSI against the bundle's training reference) is measured over this many of the last"
        " event-triggered scores (0: off)",
        lo=0,
        hi=10_000_000,
    )
    outcome_sample: int = _setting(
        10_000,
        "Users sampled for live quality, at most, per partition (a bottom-k sample by a hash of the user key):"
        " each is scored as of every cutoff (multiples of the model's horizon in event time) and the score"
        " resolved a horizon later, as training labels its rows (0: no outcomes, no live quality)",
        lo=0,
        hi=10_000_000,
    )
    quality_window_days: float = _setting(
        30.0,
        "Live model quality (ROC-AUC, Brier, calibration, top-tier lift) is computed over the outcomes resolved in"
        " this many days of event time, per model version",
        lo=0.01,
        hi=3650.0,
    )
    batch_max_size: int = _setting(
        8192, "Most events gathered into one micro-batch (the adaptive size stays at or below it)", lo=1, hi=100_000
    )
    batch_max_wait_ms: int = _setting(
        25, "Longest the oldest event of a forming micro-batch waits for more, in ms", lo=1, hi=60_000
    )
    latency_target_ms: int = _setting(
        100,
        "Event-to-decision latency the micro-batch size adapts to: a batch may take half of it to process",
        lo=1,
        hi=600_000,
    )
    fetch_max_wait_ms: int = _setting(
        20, "Longest the broker may hold a fetch when no data is waiting, in ms", lo=1, hi=30_000
    )
    allowed_lateness_s: float = _setting(
        300.0, "Event-time lateness tolerated before a partition's watermark moves on, in s", lo=0.0, hi=86_400 * 7
    )
    max_future_skew_s: float = _setting(
        300.0,
        "How far an event's time may run ahead of its record's timestamp (or the wall clock) before it is"
        " dead-lettered as timestamp_in_future, in s",
        lo=1.0,
        hi=86_400 * 7,
    )
    watermark_jump_s: float = _setting(
        86_400.0,
        "A partition watermark advance larger than this in one batch is logged and exported, in s",
        lo=1.0,
        hi=86_400 * 3650,
    )
    replay: str = _setting(
        "false",
        "true: the input is a replay of history, so cooldowns, caps and budgets run on event time alone and"
        " the circuit breaker is off; false: they hold on the wall clock too",
        choices=("false", "true"),
    )
    circuit_surge_factor: float = _setting(
        10.0,
        "The circuit breaker opens when a minute's interventions would pass this many times the trailing"
        " hour's average per minute",
        lo=1.0,
        hi=1_000.0,
    )
    circuit_min_per_minute: int = _setting(
        300,
        "...but never below this many interventions per minute (set it above a normal busy minute)",
        lo=1,
        hi=10_000_000,
    )
    circuit_max_per_minute: int = _setting(
        20_000,
        "Absolute ceiling of interventions per minute per worker before the breaker opens (0: none)",
        lo=0,
        hi=100_000_000,
    )
    circuit_cooldown_s: float = _setting(
        900.0,
        "Seconds an open circuit breaker stays open before it closes by itself (0: until `retention circuit close`)",
        lo=0.0,
        hi=86_400 * 7,
    )
    metrics_host: str = _setting("127.0.0.1", "Address the Prometheus /metrics endpoint binds")
    metrics_port: int = _setting(9108, "Port of the Prometheus /metrics endpoint (0: off)", lo=0, hi=65535)
    web_host: str = _setting("127.0.0.1", "Address the Faust web server binds")
    web_port: int = _setting(6066, "Port of the Faust web server", lo=1, hi=65535)
    state_api: str = _setting("on", "Serve GET /users/{user_id} on the Faust web server", choices=("on", "off"))
    api_token: str = field(
        default="",
        repr=False,
        metadata={
            "help": "Bearer token that GET /users/... and /circuit/ require (empty: none, and then the web server"
            " must bind a loopback address unless RETENTION_API_PUBLIC=true); never printed",
            "choices": (),
            "lo": None,
            "hi": None,
        },
    )
    api_public: str = _setting(
        "false",
        "true: serve /users/... without a token on a non-loopback address, on purpose",
        choices=("false", "true"),
    )
    store: str = _setting("memory://", "Faust table store", choices=("memory://", "rocksdb://"))
    data_dir: str = _setting(".retention-data", "Folder for Faust's local data (RocksDB state)")
    session_timeout_s: float = _setting(
        10.0, "Consumer-group session timeout in seconds (the embedded broker: 2)", lo=1.0, hi=300.0
    )
    policy_file: str = _setting(
        "", "Policy file (TOML: tiers, offers, caps, budget, suppression, holdout); empty: the built-in default"
    )
    log_level: str = _setting("info", "Log level", choices=("debug", "info", "warning", "error"))

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            meta = spec.metadata
            allowed = allowed_values(spec)
            if meta["choices"] and value not in meta["choices"]:
                _fail(spec.name, value, allowed)
            if meta["lo"] is not None and not meta["lo"] <= value <= meta["hi"]:
                _fail(spec.name, value, allowed)
            if spec.type == "str" and not value and spec.name not in _MAY_BE_EMPTY:
                _fail(spec.name, value, "a non-empty string")
        if not self.broker or any(":" not in part for part in self.broker_list):
            _fail("broker", self.broker, "comma-separated host:port pairs, e.g. 127.0.0.1:9092")
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            msg = (
                f"RETENTION_SECURITY_PROTOCOL={self.security_protocol} needs RETENTION_SASL_USERNAME and "
                "RETENTION_SASL_PASSWORD"
            )
            raise SettingsError(msg)
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                _fail(name, path, "the path of a readable file")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            msg = "RETENTION_SSL_CERTFILE and RETENTION_SSL_KEYFILE go together: set both or neither"
            raise SettingsError(msg)
        try:
            self.__dict__["_policy"] = load_policy(self.policy_file or None)
        except PolicyFileError as exc:
            msg = f"RETENTION_POLICY_FILE: {exc}"
            raise SettingsError(msg) from exc

    @property
    def broker_list(self) -> list[str]:
        """Bootstrap servers as host:port strings (a ``kafka://`` prefix is dropped)."""
        return [part.strip().removeprefix("kafka://") for part in self.broker.split(",") if part.strip()]

    @property
    def policy(self) -> PolicyConfig:
        """The policy, read (and checked) from the policy file once, at construction."""
        return self.__dict__["_policy"]

    @property
    def changelog_topics(self) -> tuple[str, str, str]:
        """Faust's changelog topics: user state, silence timers, policy budget."""
        return (
            f"{self.app_id}-user-state-changelog",
            f"{self.app_id}-silence-timers-changelog",
            f"{self.app_id}-policy-budget-changelog",
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read ``RETENTION_*`` variables, then apply explicit overrides (CLI flags)."""
        known = {f"{ENV_PREFIX}{spec.name.upper()}": spec for spec in fields(cls)}
        values: dict[str, Any] = {}
        secret_files = {f"{ENV_PREFIX}{name.upper()}_FILE": name for name in SECRETS}
        for name, raw in environ.items():
            if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
                continue
            if name in secret_files:  # a secret from a file (a mounted Kubernetes or Docker secret)
                try:
                    values[secret_files[name]] = Path(raw).read_text().rstrip("\r\n")
                except OSError as exc:
                    msg = f"{name}: cannot read {raw}: {exc.strerror}"
                    raise SettingsError(msg) from None
                continue
            spec = known.get(name)
            if spec is None and name in _MOVED_TO_POLICY_FILE:
                msg = (
                    f"{name} is no longer a setting: it moved to the policy file as {_MOVED_TO_POLICY_FILE[name]}; "
                    "copy retention_model/policy/default.toml, edit it and set RETENTION_POLICY_FILE"
                )
                raise SettingsError(msg)
            if spec is None:
                msg = f"unknown setting {name}; known settings: {', '.join(sorted(known))}"
                raise SettingsError(msg)
            values[spec.name] = _convert(spec, raw)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls(**values)


#: Policy settings of version 0.1, now keys of the policy file.
_MOVED_TO_POLICY_FILE = {
    "RETENTION_MEDIUM_RISK": "[risk] medium",
    "RETENTION_HIGH_RISK": "[risk] high",
    "RETENTION_COUPON_VALUE": "[coupon] value",
    "RETENTION_COUPON_MIN_SPEND": "[coupon] min_spend",
    "RETENTION_COUPON_EXPIRY_DAYS": "[coupon] expiry_days",
    "RETENTION_COUPON_COOLDOWN_DAYS": "[coupon] cooldown_days",
    "RETENTION_RECOMMENDATION_COOLDOWN_DAYS": "[recommendation] cooldown_days",
    "RETENTION_HOLDOUT_SHARE": "[holdout] share",
    "RETENTION_HOLDOUT_SALT": "[holdout] salt",
}
_MAY_BE_EMPTY = frozenset(
    {
        "api_token",
        "erasure_requests_topic",
        "export_key",
        "policy_file",
        "shadow_model_path",
        "sasl_username",
        "sasl_password",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
    }
)
SECRETS = frozenset({"sasl_password", "export_key", "api_token"})

# Variables with the prefix that are not settings of this object.
_NOT_SETTINGS = frozenset({"RETENTION_TEST_BROKER"})


_TYPE_WORDS = {"str": "text", "int": "an integer", "float": "a number"}


def allowed_values(spec: dataclasses.Field[Any]) -> str:
    meta = spec.metadata
    if meta["choices"]:
        return "one of " + ", ".join(meta["choices"])
    kind = _TYPE_WORDS.get(str(spec.type), str(spec.type))
    if meta["lo"] is not None:
        return f"{kind} from {meta['lo']:g} to {meta['hi']:g}"
    return kind


def _fail(name: str, value: Any, allowed: str) -> None:
    msg = f"setting RETENTION_{name.upper()} (--{name.replace('_', '-')}) is {value!r}; allowed: {allowed}"
    raise SettingsError(msg)


def _convert(spec: dataclasses.Field[Any], raw: str) -> Any:
    try:
        if spec.type == "int":
            return int(raw)
        if spec.type == "float":
            return float(raw)
    except ValueError:
        _fail(spec.name, raw, allowed_values(spec))
    return raw


def add_settings_flags(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add a ``--flag`` per setting (all, or those named); defaults come from the environment.

    Secrets get no flag: a command line shows in ``ps`` and shell history. They come
    from ``RETENTION_<NAME>`` or a file named by ``RETENTION_<NAME>_FILE``.
    """
    for spec in fields(Settings):
        if (names is not None and spec.name not in names) or spec.name in SECRETS:
            continue
        kind = {"int": int, "float": float}.get(str(spec.type), str)
        parser.add_argument(
            f"--{spec.name.replace('_', '-')}",
            dest=spec.name,
            type=kind,
            default=None,
            help=f"{spec.metadata['help']} (env RETENTION_{spec.name.upper()}, default {spec.default!r})",
        )
