"""Targeting rules judged on the simulator's ground truth, and uplift learners on the Hillstrom experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.effect import qini_curve
from training.simulator import SimConfig
from training.uplift.campaign import CampaignConfig, simulate_campaign
from training.uplift.learners import APPROACHES, BASES, fit_served_uplift, fit_uplift
from training.uplift.qini_curve import qini

__all__ = ["evaluate_hillstrom", "evaluate_policy", "ranked_qini_curve"]


def ranked_qini_curve(scores: np.ndarray, treated: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """The Qini curve of a ranking at each twentieth, beside random targeting (``retention report effect``'s)."""
    rows = zip(np.asarray(scores, dtype=float).tolist(), treated.astype(bool).tolist(), y.astype(bool).tolist())
    return qini_curve(list(rows))


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
    curves: dict[str, dict[str, Any]] = {}
    for outcome in ("visit", "conversion"):
        y = frame[outcome].to_numpy()
        idx_train, idx_test = train_test_split(
            np.arange(len(frame)), test_size=0.3, random_state=seed, stratify=treated * 2 + y
        )
        results: dict[str, Any] = {}
        curves[outcome] = {}
        for approach in APPROACHES:
            for base in BASES:
                predict = fit_uplift(x[idx_train], treated[idx_train], y[idx_train], approach, base, seed)
                scores = predict(x[idx_test])
                results[f"{approach}/{base}"] = qini(scores, treated[idx_test], y[idx_test])
                curves[outcome][f"{approach}/{base}"] = ranked_qini_curve(scores, treated[idx_test], y[idx_test])
        random_scores = np.random.default_rng(seed).random(len(idx_test))
        results["random"] = qini(random_scores, treated[idx_test], y[idx_test])
        out[outcome] = results
    out["qini_curves"] = curves
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
        "simulation_qini_curves": {"top_risk": ranked_qini_curve(risk, target.treated, target.observed)},
    }
    for approach in APPROACHES:
        for base in BASES:
            predict = fit_uplift(x_learn, learn.treated, learn.observed, approach, base, seed)
            scores = predict(x_target)
            result["simulation_qini"][f"{approach}/{base}"] = qini(scores, target.treated, target.observed)
            result["simulation_qini_curves"][f"{approach}/{base}"] = ranked_qini_curve(
                scores, target.treated, target.observed
            )
    result["simulation_qini"]["random"] = qini(
        np.random.default_rng(seed).random(len(truth)), target.treated, target.observed
    )
    if hillstrom is not None and Path(hillstrom).is_file():
        result["hillstrom"] = evaluate_hillstrom(hillstrom, seed)
    else:
        result["hillstrom"] = {"skipped": f"no Hillstrom data at {hillstrom}"}
    return result
