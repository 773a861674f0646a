"""The policy file: one versioned TOML file says who gets what, and what it may cost.

Sections map onto :class:`PolicyConfig` fields as ``<section>_<key>``
(``[coupon] value = 10`` sets ``coupon_value``). Unknown keys and wrong types are
refused with the file, the key and what is allowed, so a typo never silently
falls back to a default. ``retention_model/policy/default.toml`` is the
documented default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from retention_model.errors import PolicyFileError

__all__ = ["DEFAULT_POLICY_FILE", "PolicyConfig", "PolicyFileError", "load_policy"]

DEFAULT_POLICY_FILE: Final = Path(__file__).with_name("default.toml")
POLICY_SCHEMA: Final = 1
TIERS: Final = ("low", "medium", "high")

Targeting = Literal["risk", "expected_value"]


@dataclass(frozen=True)
class PolicyConfig:
    """What the policy does; every field has a documented default (``default.toml``).

    Tiers: ``high`` at ``risk >= risk_high``, ``medium`` at ``risk >= risk_medium``,
    else ``low``. ``targeting_mode = "risk"`` sends each tier its offers;
    ``"expected_value"`` sends a coupon only where the customer's value × the
    coupon's expected effect on retention exceeds its expected cost.
    """

    version: str = "builtin"
    currency: str = "EUR"
    risk_medium: float = 0.5
    risk_high: float = 0.75
    targeting_mode: Targeting = "risk"
    #: Effect of a coupon on P(retained) per unit of churn risk, used when the model
    #: bundle has no uplift model: effect = risk × default_effect.
    targeting_default_effect: float = 0.10
    #: Customer value assumed for users with too little history to estimate one.
    targeting_value_floor: float = 20.0
    #: Horizon of the customer value (expected spend) estimate.
    targeting_value_horizon_days: float = 90.0
    coupon_value: float = 10.0
    coupon_min_spend: float = 30.0
    coupon_expiry_days: int = 14
    coupon_cooldown_days: float = 14.0
    coupon_tiers: tuple[str, ...] = ("high",)
    #: Share of sent coupons expected to be redeemed (the cost of a coupon is
    #: value × this rate).
    coupon_redemption_rate: float = 0.4
    recommendation_cooldown_days: float = 3.0
    recommendation_tiers: tuple[str, ...] = ("medium", "high")
    recommendation_max_items: int = 10
    #: At most this many interventions per user per window (0: no cap).
    caps_per_user: int = 3
    caps_window_days: int = 30
    #: Coupon budget per event-time day and in total, in money (face value) and in
    #: count; 0 means no cap. Shared by all workers (see ``BudgetLedger``).
    budget_daily_money: float = 0.0
    budget_daily_count: int = 0
    budget_total_money: float = 0.0
    budget_total_count: int = 0
    suppression_purchased_within_days: float = 1.0
    suppression_active_coupon: bool = True
    #: A file of user ids (one per line) who get nothing; read at load time.
    suppression_opt_out_list: str = ""
    holdout_share: float = 0.10
    holdout_salt: str = "retention-holdout-v1"
    opted_out_users: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.holdout_share < 1.0:
            problems.append(f"holdout_share must be in [0, 1), got {self.holdout_share}")
        if not 0.0 <= self.risk_medium <= self.risk_high <= 1.0:
            problems.append(f"need 0 <= risk_medium <= risk_high <= 1, got {self.risk_medium} and {self.risk_high}")
        if self.targeting_mode not in ("risk", "expected_value"):
            problems.append(f"targeting_mode must be risk or expected_value, got {self.targeting_mode!r}")
        for name in ("coupon_tiers", "recommendation_tiers"):
            bad = [t for t in getattr(self, name) if t not in TIERS]
            if bad:
                problems.append(f"{name} may only name {', '.join(TIERS)}; got {bad}")
        if not 0.0 <= self.coupon_redemption_rate <= 1.0:
            problems.append(f"coupon_redemption_rate must be in [0, 1], got {self.coupon_redemption_rate}")
        if self.caps_per_user < 0 or self.caps_per_user > 255 or self.caps_window_days < 1:
            problems.append("caps_per_user must be in 0..255 and caps_window_days at least 1")
        negative = [
            f.name
            for f in dataclasses.fields(self)
            if f.name.startswith(("budget_", "coupon_value", "coupon_min_spend", "targeting_value"))
            and getattr(self, f.name) < 0
        ]
        if negative:
            problems.append(f"must not be negative: {', '.join(negative)}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def has_budget(self) -> bool:
        """Whether any budget cap is set."""
        return any((self.budget_daily_money, self.budget_daily_count, self.budget_total_money, self.budget_total_count))


_SETTABLE: Final = {f.name: f for f in dataclasses.fields(PolicyConfig) if f.name != "opted_out_users"}
_BASIC_TYPES: Final = {"float": (int, float), "int": (int,), "str": (str,), "bool": (bool,)}


def _coerce(path: Path, key: str, value: Any, type_name: str) -> Any:
    if type_name.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            msg = f"{path}: {key} must be a list of strings, got {value!r}"
            raise PolicyFileError(msg)
        return tuple(value)
    base = "str" if type_name.startswith(("Targeting", "Literal")) else type_name
    allowed = _BASIC_TYPES[base]
    if (isinstance(value, bool) and base != "bool") or not isinstance(value, allowed):
        msg = f"{path}: {key} must be {base}, got {value!r}"
        raise PolicyFileError(msg)
    return float(value) if base == "float" else value


def load_policy(path: str | Path | None = None) -> PolicyConfig:
    """Read a policy file (the built-in default when ``path`` is empty)."""
    path = Path(path) if path else DEFAULT_POLICY_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        msg = f"cannot read policy file {path}: {exc.strerror or exc}"
        raise PolicyFileError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"policy file {path} is not valid TOML: {exc}"
        raise PolicyFileError(msg) from exc
    schema = raw.pop("schema", None)
    if schema != POLICY_SCHEMA:
        msg = f"policy file {path} must say schema = {POLICY_SCHEMA} (got {schema!r})"
        raise PolicyFileError(msg)
    values: dict[str, Any] = {}
    for section, body in raw.items():
        items = body.items() if isinstance(body, dict) else [(None, body)]
        for key, value in items:
            name = section if key is None else f"{section}_{key}"
            spec = _SETTABLE.get(name)
            if spec is None:
                shown = name if key is None else f"[{section}] {key}"
                msg = f"{path}: unknown policy key {shown}; known: {', '.join(sorted(_SETTABLE))}"
                raise PolicyFileError(msg)
            values[name] = _coerce(path, name, value, str(spec.type))
    if "version" not in values:
        msg = f'policy file {path} has no version; add version = "..." so decisions can name it'
        raise PolicyFileError(msg)
    opt_out_list = values.get("suppression_opt_out_list", "")
    if opt_out_list:
        list_path = (path.parent / opt_out_list) if not Path(opt_out_list).is_absolute() else Path(opt_out_list)
        try:
            lines = list_path.read_text().splitlines()
        except OSError as exc:
            msg = f"{path}: cannot read the opt-out list {list_path}: {exc.strerror or exc}"
            raise PolicyFileError(msg) from exc
        values["opted_out_users"] = frozenset(line.strip() for line in lines if line.strip())
    try:
        return PolicyConfig(**values)
    except ValueError as exc:
        msg = f"policy file {path}: {exc}"
        raise PolicyFileError(msg) from exc
