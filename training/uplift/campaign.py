"""A simulated coupon campaign: users at a decision time, and both potential outcomes of each.

Each user's coupon response depends on their latent traits: persuadables (retained
only with a coupon), sure things, lost causes and do-not-disturbs (lost *because*
of a coupon). Both outcomes are known, so any targeting rule can be scored by the
retained users it truly adds; the observable log is randomised (a coin decides who
is treated), like a holdout group in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retention_model.events import Event, EventType
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import features_at
from retention_model.features.state import DAY_MS
from training.simulator import SimConfig, SimUser, simulate_users

__all__ = [
    "BAD_EXPERIENCE_DAYS",
    "MAX_SILENCE_DAYS",
    "Campaign",
    "CampaignConfig",
    "campaign_features_names",
    "campaign_from_simulation",
    "simulate_campaign",
]

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


def campaign_features_names() -> tuple[str, ...]:
    """Column names of :attr:`Campaign.features` (the shared feature definitions)."""
    return FEATURE_NAMES
