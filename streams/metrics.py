"""Prometheus metrics of the worker.

One ``NamedTuple`` built by :func:`create` with an injectable registry, so tests
get a fresh registry each. No label ever carries a user id: label values come
from small closed sets (event types, outcomes, reasons, tiers, kinds).
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "create"]

# Seconds. Micro-batching puts decisions in the tens of milliseconds; the tail
# buckets catch a stalled model or broker.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCORING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000)


class Metrics(NamedTuple):
    """Every metric the worker exports."""

    events: Counter
    dead_letters: Counter
    batch_events: Histogram
    batch_size_target: Gauge
    batch_users: Histogram
    scoring_seconds: Histogram
    decision_latency_seconds: Histogram
    scores: Counter
    interventions: Counter
    decisions: Counter
    users_tracked: Gauge
    model_info: Gauge
    publish_errors: Counter
    silence_rescored: Counter
    late_events: Counter
    model_reloads: Counter
    consumer_lag: Gauge
    recovering: Gauge
    recovery_remaining: Gauge
    assigned_partitions: Gauge
    decision_rules: Counter
    attributed_events: Counter
    budget_spent: Gauge
    budget_cap: Gauge
    shadow_model_info: Gauge
    uncommitted_records: Gauge
    shadow_risk_difference: Histogram
    shadow_tier_agreement: Counter
    circuit_open: Gauge
    circuit_trips: Counter
    watermark_jump_seconds: Gauge
    watermark_jumps: Counter
    feature_psi: Gauge
    feature_psi_max: Gauge
    drift_window_scores: Gauge
    outcomes: Counter
    outcomes_pending: Gauge
    outcome_users: Gauge
    outcome_users_left_silent: Counter
    model_live_roc_auc: Gauge
    model_live_brier: Gauge
    model_live_ece: Gauge
    model_live_top_tier_lift: Gauge
    model_live_outcomes: Gauge
    model_test_roc_auc: Gauge
    model_test_brier: Gauge
    model_test_ece: Gauge
    effect_outcomes: Gauge
    effect_retained_share: Gauge
    effect_uplift: Gauge
    users_erased: Counter
    users_expired: Counter
    erasure_requests: Counter


def create(registry: CollectorRegistry, prefix: str = "retention") -> Metrics:
    """Register the worker's metrics in ``registry``."""
    return Metrics(
        events=Counter(
            f"{prefix}_events_total",
            "Records consumed, by type and outcome: applied, duplicate (offset already in the state),"
            " duplicate_event (a retried event id or purchase order id, counted once), dead_lettered"
            " (type invalid), ignored (type unknown)",
            ["type", "outcome"],
            registry=registry,
        ),
        dead_letters=Counter(
            f"{prefix}_dead_letters_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        ),
        batch_events=Histogram(
            f"{prefix}_batch_events", "Events per micro-batch", buckets=BATCH_BUCKETS, registry=registry
        ),
        batch_size_target=Gauge(
            f"{prefix}_batch_size_target",
            "Events a micro-batch may gather now, adapted to the latency target",
            registry=registry,
        ),
        batch_users=Histogram(
            f"{prefix}_batch_users", "Users scored per micro-batch", buckets=BATCH_BUCKETS, registry=registry
        ),
        scoring_seconds=Histogram(
            f"{prefix}_scoring_seconds", "Model call time per micro-batch", buckets=SCORING_BUCKETS, registry=registry
        ),
        decision_latency_seconds=Histogram(
            f"{prefix}_event_to_decision_seconds",
            "From the event's Kafka timestamp to its user's score being published",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        scores=Counter(f"{prefix}_scores_total", "Scores published, by risk tier", ["tier"], registry=registry),
        interventions=Counter(
            f"{prefix}_interventions_total",
            "Interventions published, by kind and tier",
            ["kind", "tier"],
            registry=registry,
        ),
        decisions=Counter(
            f"{prefix}_decisions_total",
            "Policy decisions, by kind and action (sent, held_out, suppressed)",
            ["kind", "action"],
            registry=registry,
        ),
        users_tracked=Gauge(
            f"{prefix}_users_tracked",
            "Users with state on this worker (exact with the memory store; with RocksDB counted once per assignment,"
            " then up as new users arrive)",
            registry=registry,
        ),
        model_info=Gauge(
            f"{prefix}_model_info", "The model bundle in use (value 1)", ["version", "device"], registry=registry
        ),
        publish_errors=Counter(
            f"{prefix}_publish_errors_total",
            "Records that could not be published, by topic",
            ["topic"],
            registry=registry,
        ),
        silence_rescored=Counter(
            f"{prefix}_silence_rescored_total",
            "Users re-scored because their silence crossed a threshold",
            registry=registry,
        ),
        late_events=Counter(
            f"{prefix}_late_events_total",
            "Events older than their partition's watermark (applied all the same; see README)",
            registry=registry,
        ),
        model_reloads=Counter(
            f"{prefix}_model_reloads_total",
            "Attempts to load a newer model bundle, by result (loaded, failed)",
            ["result"],
            registry=registry,
        ),
        consumer_lag=Gauge(
            f"{prefix}_consumer_lag_records",
            "Events not yet processed, by partition of the events topic (high watermark - next offset)",
            ["partition"],
            registry=registry,
        ),
        recovering=Gauge(
            f"{prefix}_recovering", "1 while tables are being recovered from changelogs", registry=registry
        ),
        recovery_remaining=Gauge(
            f"{prefix}_recovery_remaining_records",
            "Changelog records left to read before this worker's tables are recovered",
            registry=registry,
        ),
        assigned_partitions=Gauge(
            f"{prefix}_assigned_partitions", "Event partitions assigned to this worker", registry=registry
        ),
        decision_rules=Counter(
            f"{prefix}_decision_rules_total",
            "Policy decisions by kind and the rule that made them (tier, holdout, cooldown, budget, ...)",
            ["kind", "rule"],
            registry=registry,
        ),
        attributed_events=Counter(
            f"{prefix}_attributed_events_total",
            "Events that carry an intervention_id (coupon redemptions, clicks on recommendations), by type",
            ["type"],
            registry=registry,
        ),
        budget_spent=Gauge(
            f"{prefix}_budget_spent",
            "Coupon budget spent in this worker's partitions' slices, by scope (daily: today, the real UTC day, or the"
            " latest event day in a replay; total) and unit (money, count)",
            ["scope", "unit"],
            registry=registry,
        ),
        budget_cap=Gauge(
            f"{prefix}_budget_cap",
            "Coupon budget cap of this worker's partitions' slices (0: no cap), by scope and unit",
            ["scope", "unit"],
            registry=registry,
        ),
        uncommitted_records=Gauge(
            f"{prefix}_uncommitted_records",
            "Records processed but not yet committed, by partition (what a restart would re-read)",
            ["partition"],
            registry=registry,
        ),
        shadow_model_info=Gauge(
            f"{prefix}_shadow_model_info",
            "The bundle scored in shadow (value 1); absent when there is none",
            ["version"],
            registry=registry,
        ),
        shadow_risk_difference=Histogram(
            f"{prefix}_shadow_risk_difference",
            "Shadow risk minus live risk, per scored user",
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.2, 0.5),
            registry=registry,
        ),
        shadow_tier_agreement=Counter(
            f"{prefix}_shadow_tier_agreement_total",
            "Scored users whose shadow tier equals (agree=yes) or differs from (no) the live tier",
            ["agree"],
            registry=registry,
        ),
        circuit_open=Gauge(
            f"{prefix}_circuit_open",
            "1 while the circuit breaker refuses interventions after a surge (scores keep flowing)",
            registry=registry,
        ),
        circuit_trips=Counter(
            f"{prefix}_circuit_trips_total", "Times the intervention circuit breaker opened", registry=registry
        ),
        watermark_jump_seconds=Gauge(
            f"{prefix}_watermark_jump_seconds",
            "The latest watermark advance over RETENTION_WATERMARK_JUMP_S in one batch, by partition, in s",
            ["partition"],
            registry=registry,
        ),
        users_erased=Counter(
            f"{prefix}_users_erased_total",
            "Users erased on request (retention forget): state and timers deleted, tombstones written",
            registry=registry,
        ),
        users_expired=Counter(
            f"{prefix}_users_expired_total",
            "Users dropped from state and timers after RETENTION_STATE_TTL_DAYS of silence (event time)",
            registry=registry,
        ),
        erasure_requests=Counter(
            f"{prefix}_erasure_requests_total",
            "Records of the erasure-requests topic, by outcome: forwarded to the events topic,"
            " or refused (dead-lettered with the reason)",
            ["outcome"],
            registry=registry,
        ),
        watermark_jumps=Counter(
            f"{prefix}_watermark_jumps_total",
            "Watermark advances over RETENTION_WATERMARK_JUMP_S in one batch, by partition",
            ["partition"],
            registry=registry,
        ),
        feature_psi=Gauge(
            f"{prefix}_feature_psi",
            "Population stability index of each model input over the drift window, against the bundle's"
            " training reference (above 0.25: a shift the model was not trained on)",
            ["feature"],
            registry=registry,
        ),
        feature_psi_max=Gauge(
            f"{prefix}_feature_psi_max",
            "The largest retention_feature_psi now (0 while drift is off or the window is filling)",
            registry=registry,
        ),
        drift_window_scores=Gauge(
            f"{prefix}_drift_window_scores",
            "Event-triggered scores in the drift window that the PSI figures are computed over",
            registry=registry,
        ),
        outcomes=Counter(
            f"{prefix}_outcomes_total",
            "Sampled scores whose horizon closed, by outcome: churned (no purchase within the horizon) or retained",
            ["outcome"],
            registry=registry,
        ),
        outcomes_pending=Gauge(
            f"{prefix}_outcomes_pending",
            "Cutoff scores of sampled users waiting for their horizon to close, on this worker",
            registry=registry,
        ),
        outcome_users=Gauge(
            f"{prefix}_outcome_users",
            "Users in the outcome sample on this worker (at most RETENTION_OUTCOME_SAMPLE per partition): each is"
            " scored as of every cutoff while sampled",
            registry=registry,
        ),
        outcome_users_left_silent=Counter(
            f"{prefix}_outcome_users_left_silent_total",
            "Sampled users who left the outcome sample silent past the bundle's max_silence_days at a cutoff (as"
            " training leaves such rows out)",
            registry=registry,
        ),
        model_live_roc_auc=Gauge(
            f"{prefix}_model_live_roc_auc",
            "ROC-AUC of the model version's scores against their outcomes over the quality window (1: perfect"
            " ranking, 0.5: none)",
            ["version"],
            registry=registry,
        ),
        model_live_brier=Gauge(
            f"{prefix}_model_live_brier",
            "Brier score (mean squared error of the risk) over the quality window, by model version (lower is better)",
            ["version"],
            registry=registry,
        ),
        model_live_ece=Gauge(
            f"{prefix}_model_live_ece",
            "Expected calibration error (10 equal-width risk bins) over the quality window, by model version",
            ["version"],
            registry=registry,
        ),
        model_live_top_tier_lift=Gauge(
            f"{prefix}_model_live_top_tier_lift",
            "Churn rate of the high tier's scores over the churn rate of all, over the quality window, by model"
            " version",
            ["version"],
            registry=registry,
        ),
        model_live_outcomes=Gauge(
            f"{prefix}_model_live_outcomes",
            "Resolved outcomes in the quality window that the live figures are computed over, by model version",
            ["version"],
            registry=registry,
        ),
        model_test_roc_auc=Gauge(
            f"{prefix}_model_test_roc_auc",
            "ROC-AUC the bundle recorded on its test cutoff at training time, by model version",
            ["version"],
            registry=registry,
        ),
        model_test_brier=Gauge(
            f"{prefix}_model_test_brier",
            "Brier score the bundle recorded on its test cutoff at training time, by model version",
            ["version"],
            registry=registry,
        ),
        model_test_ece=Gauge(
            f"{prefix}_model_test_ece",
            "Expected calibration error the bundle recorded on its test cutoff at training time, by model version",
            ["version"],
            registry=registry,
        ),
        effect_outcomes=Gauge(
            f"{prefix}_effect_outcomes",
            "Outcomes of sampled users in the quality window, by policy group: eligible or holdout",
            ["group"],
            registry=registry,
        ),
        effect_retained_share=Gauge(
            f"{prefix}_effect_retained_share",
            "Share of sampled users who bought within the horizon after a cutoff, over the quality window, by policy"
            " group (eligible or holdout)",
            ["group"],
            registry=registry,
        ),
        effect_uplift=Gauge(
            f"{prefix}_effect_uplift",
            "Retained share of eligible minus holdout sampled users over the quality window (the policy's"
            " intent-to-treat effect), by bound: estimate, low and high of its 95% interval",
            ["bound"],
            registry=registry,
        ),
    )
