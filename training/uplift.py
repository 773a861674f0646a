"""Uplift: who does a coupon change, measured against known ground truth and real data.

A *campaign simulation* takes the simulator's users at a decision time and gives
each a coupon response that depends on their latent traits: persuadables (retained
only with a coupon), sure things, lost causes and do-not-disturbs (lost *because*
of a coupon). Both potential outcomes are known, so any targeting rule can be
scored by the retained users it truly adds. The observable log is randomised (a
coin decides who is treated), like a holdout group in production.

Two standard uplift learners are fitted on such logs, each with a linear and a
tree base learner: the *two-model* approach (one model per arm, uplift = the
difference) and the *class transformation* (Z = T·Y + (1-T)(1-Y) on a balanced
sample, uplift = 2·P(Z=1) - 1). They are evaluated by the Qini coefficient and the
uplift in the top 30%, on the simulation and on the Hillstrom e-mail experiment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.events import Event, EventType, parse_timestamp_ms
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import features_at
from retention_model.features.state import DAY_MS
from retention_model.model.uplift import UpliftModel
from training.simulator import SimConfig, SimUser, simulate_users

__all__ = [
    "Campaign",
    "CampaignConfig",
    "TreatmentRecord",
    "campaign_from_simulation",
    "evaluate_hillstrom",
    "evaluate_policy",
    "fit_served_uplift",
    "fit_uplift",
    "qini",
    "read_treatment_log",
    "simulate_campaign",
    "write_treatment_log",
]

log = logging.getLogger(__name__)

APPROACHES = ("two_model", "class_transformation")
BASES = ("logistic", "gradient_boosting")
#: Users silent longer than this at the decision time are not in the campaign.
MAX_SILENCE_DAYS = 90
BAD_EXPERIENCE_DAYS = 45


@dataclass(frozen=True)
class CampaignConfig:
    """When the campaign decides, how long it waits for a purchase, how many are treated."""

    decision_day: int = 120
    horizon_days: int = 30
    treat_share: float = 0.5
    seed: int = 11


@dataclass
class Campaign:
    """One simulated campaign: features at the decision time, treatment, both outcomes."""

    user_ids: list[str]
    features: np.ndarray
    treated: np.ndarray
    y0: np.ndarray  # retained (a purchase within the horizon) without a coupon
    y1: np.ndarray  # retained with a coupon
    kind: np.ndarray  # persuadable, sure_thing, lost_cause, do_not_disturb
    decision_ms: int
    horizon_days: int

    @property
    def observed(self) -> np.ndarray:
        """The outcome the log shows: y1 for the treated, y0 for the rest."""
        return np.where(self.treated, self.y1, self.y0)

    @property
    def true_uplift(self) -> np.ndarray:
        """y1 - y0 per user (-1, 0 or 1)."""
        return self.y1.astype(np.int8) - self.y0.astype(np.int8)


def _persuade_probability(traits: dict[str, float], bad_recently: bool, fading: bool) -> float:
    """Chance that a coupon turns a would-be churner into a buyer.

    Coupon lovers respond; a recent bad experience (cancellation, return, low
    rating) is not fixed by a discount; a user already drifting away mostly does
    not read marketing any more. Top-risk targeting finds the last two groups.
    """
    p = min(0.9, 2.0 * traits["coupon_affinity"])
    if bad_recently:
        p *= 0.2
    if fading:
        p *= 0.3
    return p


def _disturb_probability(traits: dict[str, float]) -> float:
    """Chance that a coupon puts off a would-be buyer (those who never use coupons)."""
    return 0.5 if traits["coupon_affinity"] < 0.05 else 0.0


def simulate_campaign(sim: SimConfig, config: CampaignConfig = CampaignConfig()) -> Campaign:
    """Simulate users, pick those active at the decision day, draw both outcomes."""
    per_user, truth = simulate_users(sim)
    return campaign_from_simulation(per_user, truth, sim, config)


def campaign_from_simulation(
    per_user: list[list[Event]], truth: list[SimUser], sim: SimConfig, config: CampaignConfig = CampaignConfig()
) -> Campaign:
    """The campaign on already simulated users (their events stay untreated)."""
    start_ms = int(sim.start.timestamp() * 1000)
    decision = start_ms + config.decision_day * DAY_MS
    horizon = config.horizon_days * DAY_MS
    rng = np.random.default_rng(config.seed)
    events_of: dict[str, list[Any]] = {}
    points: list[tuple[str, int]] = []
    for events, user in zip(per_user, truth):
        before = [e for e in events if e.ts_ms <= decision]
        if not before or decision - before[-1].ts_ms > MAX_SILENCE_DAYS * DAY_MS:
            continue
        events_of[user.user_id] = events
        points.append((user.user_id, decision))
    keys, matrix = features_at(events_of, points)
    truth_of = {u.user_id: u for u in truth}
    y0 = np.zeros(len(keys), dtype=bool)
    y1 = np.zeros(len(keys), dtype=bool)
    kind = np.empty(len(keys), dtype=object)
    for row, (user_id, _) in enumerate(keys):
        events = events_of[user_id]
        user = truth_of[user_id]
        retained = any(e.type is EventType.PURCHASE and decision < e.ts_ms <= decision + horizon for e in events)
        bad = any(
            decision - BAD_EXPERIENCE_DAYS * DAY_MS <= e.ts_ms <= decision
            and (
                e.type in (EventType.CANCEL_ORDER, EventType.RETURN)
                or (e.type is EventType.REVIEW and (e.rating or 5) <= 2)
            )
            for e in events
        )
        fading = user.churn_ms is not None and user.churn_ms <= decision
        draw = rng.random()
        if retained:
            y0[row] = True
            y1[row] = draw >= _disturb_probability(user.traits)
        else:
            y1[row] = draw < _persuade_probability(user.traits, bad, fading)
        kind[row] = {
            (True, True): "sure_thing",
            (False, False): "lost_cause",
            (False, True): "persuadable",
            (True, False): "do_not_disturb",
        }[bool(y0[row]), bool(y1[row])]
    treated = rng.random(len(keys)) < config.treat_share
    return Campaign([k[0] for k in keys], matrix, treated, y0, y1, kind, decision, config.horizon_days)


# --- treatment logs: the randomised record an uplift model learns from ----------------


@dataclass(frozen=True)
class TreatmentRecord:
    """One randomised decision: who, when, treated or control, retained or not."""

    user_id: str
    decision_ms: int
    treated: bool
    retained: bool


def write_treatment_log(campaign: Campaign, path: str | Path) -> int:
    """Write a campaign's observable log as JSONL (what production's holdout yields)."""
    import orjson

    from retention_model.policy.policy import iso_ms

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for user_id, treated, retained in zip(campaign.user_ids, campaign.treated, campaign.observed):
            record = {
                "user_id": user_id,
                "decision_time": iso_ms(campaign.decision_ms),
                "treated": bool(treated),
                "retained": bool(retained),
            }
            handle.write(orjson.dumps(record) + b"\n")
    return len(campaign.user_ids)


def read_treatment_log(path: str | Path) -> list[TreatmentRecord]:
    """Read a treatment log; a bad line is an error naming the line, never skipped."""
    import orjson

    records = []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
            ts = parse_timestamp_ms(raw["decision_time"])
            if not isinstance(ts, int):
                raise ValueError(ts.detail)
            if not isinstance(raw["treated"], bool) or not isinstance(raw["retained"], bool):
                raise ValueError("treated and retained must be true or false")
            records.append(TreatmentRecord(str(raw["user_id"]), ts, raw["treated"], raw["retained"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = f"{path}:{number}: not a treatment record ({type(exc).__name__}: {exc})"
            raise ValueError(msg) from exc
    return records


# --- learners ---------------------------------------------------------------------------

Predict = Callable[[np.ndarray], np.ndarray]


def _classifier(base: str, seed: int) -> Any:
    if base == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000, C=0.5)
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, max_leaf_nodes=15, random_state=seed)


def fit_uplift(x: np.ndarray, treated: np.ndarray, y: np.ndarray, approach: str, base: str, seed: int = 42) -> Predict:
    """Fit one uplift learner on a randomised log; return its predict function."""
    treated = treated.astype(bool)
    y = y.astype(int)
    if approach == "two_model":
        model_t = _classifier(base, seed).fit(x[treated], y[treated])
        model_c = _classifier(base, seed).fit(x[~treated], y[~treated])
        return lambda z: model_t.predict_proba(z)[:, 1] - model_c.predict_proba(z)[:, 1]
    if approach == "class_transformation":
        share = treated.mean()
        weight = np.where(treated, 0.5 / share, 0.5 / (1.0 - share))  # balance the arms
        z = np.where(treated, y, 1 - y)
        model = _classifier(base, seed)
        model.fit(x, z, sample_weight=weight)
        return lambda q: 2.0 * model.predict_proba(q)[:, 1] - 1.0
    msg = f"unknown uplift approach {approach!r}; use one of {APPROACHES}"
    raise ValueError(msg)


#: Inverse regularisation strengths tried for the served model; the uplift signal
#: is a small difference of two noisy fits, so strong regularisation usually wins.
SERVED_C_GRID = (0.003, 0.01, 0.03, 0.1, 0.5)


def _two_model_logistic(x: np.ndarray, treated: np.ndarray, y: np.ndarray, c: float) -> UpliftModel:
    from sklearn.linear_model import LogisticRegression

    arms = {}
    for name, mask in (("treated", treated), ("control", ~treated)):
        model = LogisticRegression(max_iter=3000, C=c).fit(x[mask], y[mask].astype(int))
        arms[name] = (model.coef_[0].astype(np.float64), float(model.intercept_[0]))
    return UpliftModel(arms["treated"][0], arms["treated"][1], arms["control"][0], arms["control"][1])


def fit_served_uplift(
    x_normalised: np.ndarray, treated: np.ndarray, y: np.ndarray, seed: int = 42
) -> tuple[UpliftModel, dict[str, float]]:
    """The two-model logistic learner as plain coefficients for a model bundle.

    Its regularisation is chosen by 3-fold cross-validated Qini coefficient on
    the log itself; returns the model and the mean Qini per candidate.
    """
    from sklearn.model_selection import StratifiedKFold

    treated = treated.astype(bool)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    strata = treated.astype(int) * 2 + y.astype(int)
    scores: dict[str, float] = {}
    for c in SERVED_C_GRID:
        found = []
        for fit_idx, eval_idx in folds.split(x_normalised, strata):
            model = _two_model_logistic(x_normalised[fit_idx], treated[fit_idx], y[fit_idx], c)
            found.append(
                qini(model.predict(x_normalised[eval_idx]), treated[eval_idx], y[eval_idx])["qini_coefficient"]
            )
        scores[f"C={c:g}"] = float(np.mean(found))
    best = max(SERVED_C_GRID, key=lambda c: scores[f"C={c:g}"])
    return _two_model_logistic(x_normalised, treated, y, best), scores


# --- evaluation -------------------------------------------------------------------------


def qini(scores: np.ndarray, treated: np.ndarray, y: np.ndarray, top: float = 0.3) -> dict[str, float]:
    """Qini coefficient and uplift in the top share of a ranking, on a randomised log.

    The Qini curve at the top n users is Y_T(n) - Y_C(n)·N_T(n)/N_C(n); the
    coefficient is the mean gap between it and the random-targeting line, as a
    share of all users (0 for random targeting, higher is better).
    """
    order = np.argsort(-scores, kind="stable")
    t = treated[order].astype(float)
    yy = y[order].astype(float)
    n_t = np.cumsum(t)
    n_c = np.cumsum(1.0 - t)
    y_t = np.cumsum(yy * t)
    y_c = np.cumsum(yy * (1.0 - t))
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = np.where(n_c > 0, y_t - y_c * n_t / np.maximum(n_c, 1.0), 0.0)
    n = len(yy)
    random_line = np.arange(1, n + 1) / n * curve[-1]
    k = max(1, round(top * n))
    top_t, top_c = t[:k].astype(bool), ~t[:k].astype(bool)
    uplift_top = float(yy[:k][top_t].mean() - yy[:k][top_c].mean()) if top_t.any() and top_c.any() else 0.0
    overall = float(yy[t.astype(bool)].mean() - yy[~t.astype(bool)].mean())
    return {
        "qini_coefficient": float(np.mean(curve - random_line) / n),
        f"uplift_at_{int(top * 100)}": uplift_top,
        "uplift_overall": overall,
    }


def evaluate_hillstrom(path: str | Path, seed: int = 42) -> dict[str, Any]:
    """Qini and uplift at 30% of both approaches on the Hillstrom e-mail experiment."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(path)
    treated = (frame["segment"] != "No E-Mail").to_numpy()
    x = pd.get_dummies(
        frame[["recency", "history", "mens", "womens", "newbie", "history_segment", "zip_code", "channel"]],
        columns=["history_segment", "zip_code", "channel"],
        dtype=float,
    ).to_numpy(dtype=np.float64)
    x[:, 1] = np.log1p(x[:, 1])  # history: spend, heavy-tailed
    out: dict[str, Any] = {"rows": len(frame), "treated_share": float(treated.mean()), "split": "70/30, seed 42"}
    for outcome in ("visit", "conversion"):
        y = frame[outcome].to_numpy()
        idx_train, idx_test = train_test_split(
            np.arange(len(frame)), test_size=0.3, random_state=seed, stratify=treated * 2 + y
        )
        results: dict[str, Any] = {}
        for approach in APPROACHES:
            for base in BASES:
                predict = fit_uplift(x[idx_train], treated[idx_train], y[idx_train], approach, base, seed)
                results[f"{approach}/{base}"] = qini(predict(x[idx_test]), treated[idx_test], y[idx_test])
        random_scores = np.random.default_rng(seed).random(len(idx_test))
        results["random"] = qini(random_scores, treated[idx_test], y[idx_test])
        out[outcome] = results
    return out


def evaluate_policy(
    model_path: str | Path,
    *,
    users: int = 4000,
    budget_share: float = 0.2,
    hillstrom: str | Path | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Incremental retained users per 1,000 coupons for three targeting rules.

    Learns the uplift model on one simulated, randomised campaign and targets a
    second, independent population with it; the figures come from that
    population's ground truth (both potential outcomes), not from a model.
    """
    from retention_model.model.bundle import normalise
    from retention_model.model.scorer import ChurnModel

    model = ChurnModel(model_path, device="cpu").load()
    meta = model.meta_
    assert meta is not None
    mean, std = np.asarray(meta.mean), np.asarray(meta.std)
    learn = simulate_campaign(SimConfig(users=2 * users, seed=seed + 1), CampaignConfig(seed=seed + 1))
    target = simulate_campaign(SimConfig(users=users, seed=seed + 2), CampaignConfig(seed=seed + 2))
    x_learn = normalise(learn.features, mean, std).astype(np.float64)
    x_target = normalise(target.features, mean, std).astype(np.float64)
    served, cv_qini = fit_served_uplift(x_learn, learn.treated, learn.observed, seed)
    predicted = served.predict(x_target)
    risk = model.score_many(target.features)
    truth = target.true_uplift.astype(float)
    k = max(1, round(budget_share * len(truth)))

    def per_thousand(scores: np.ndarray) -> float:
        chosen = np.argsort(-scores, kind="stable")[:k]
        return round(1000.0 * float(truth[chosen].mean()), 2)

    random_value = round(1000.0 * float(truth.mean()), 2)  # the expectation of random targeting
    kinds = {str(name): int((target.kind == name).sum()) for name in np.unique(target.kind)}
    result: dict[str, Any] = {
        "random": random_value,
        "top_risk": per_thousand(risk),
        "uplift": per_thousand(predicted),
        "oracle": per_thousand(truth),
        "uplift_vs_top_risk": round(per_thousand(predicted) / per_thousand(risk), 2)
        if per_thousand(risk) > 0
        else None,
        "setup": {
            "users_simulated": {"uplift_training_log": 2 * users, "targeted_population": users},
            "uplift_model_cv_qini": cv_qini,
            "eligible_users": len(truth),
            "coupons": k,
            "budget_share": budget_share,
            "decision_day": CampaignConfig().decision_day,
            "horizon_days": CampaignConfig().horizon_days,
            "response_types": kinds,
            "uplift_model": "two-model logistic regression on the bundle's normalised features",
            "churn_model": meta.version,
        },
        "simulation_qini": {},
    }
    for approach in APPROACHES:
        for base in BASES:
            predict = fit_uplift(x_learn, learn.treated, learn.observed, approach, base, seed)
            result["simulation_qini"][f"{approach}/{base}"] = qini(predict(x_target), target.treated, target.observed)
    result["simulation_qini"]["random"] = qini(
        np.random.default_rng(seed).random(len(truth)), target.treated, target.observed
    )
    if hillstrom is not None and Path(hillstrom).is_file():
        result["hillstrom"] = evaluate_hillstrom(hillstrom, seed)
    else:
        result["hillstrom"] = {"skipped": f"no Hillstrom data at {hillstrom}"}
    return result


def campaign_features_names() -> tuple[str, ...]:
    """Column names of :attr:`Campaign.features` (the shared feature definitions)."""
    return FEATURE_NAMES
