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

The package follows those steps: :mod:`~training.uplift.campaign` (the simulated
campaign), :mod:`~training.uplift.treatment_log` (its observable log),
:mod:`~training.uplift.learners`, :mod:`~training.uplift.qini_curve` and
:mod:`~training.uplift.evaluation`.
"""

from __future__ import annotations

from training.uplift.campaign import Campaign, CampaignConfig, campaign_from_simulation, simulate_campaign
from training.uplift.evaluation import evaluate_hillstrom, evaluate_policy
from training.uplift.learners import APPROACHES, BASES, fit_served_uplift, fit_uplift
from training.uplift.qini_curve import qini
from training.uplift.treatment_log import TreatmentRecord, read_treatment_log, write_treatment_log

__all__ = [
    "APPROACHES",
    "BASES",
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
