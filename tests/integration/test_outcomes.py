"""Outcomes in the stream: a worker on the real broker scores its sampled users at each cutoff and
joins those scores with what the users did next.

40 users buy every 5 days; half stop after day 30. Every user is sampled, so each
30-day cutoff whose horizon closed must come back for every user seen before it,
with the risk the bundled model gives the offline features as of that cutoff,
churned exactly when the events hold no purchase within 30 days after it; the
live quality gauges must be the figures of those outcomes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.offline import features_at
from retention_model.features.state import DAY_MS
from retention_model.model.bundle import resolve_bundle
from retention_model.model.scorer import ChurnModel
from retention_model.monitoring.quality import live_quality
from retention_model.pipeline.outcomes import cutoff_after
from retention_model.policy.policy import iso_ms
from streams.producer import produce_records
from streams.settings import BUNDLED_MODEL

from .helpers import REPO, fresh_settings, read_topic, running_worker, settled_metrics, wait_for_metric, worker_env
from .test_silence import T0, buyer_events

pytestmark = pytest.mark.integration


def parse_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_each_sampled_user_comes_back_at_each_cutoff_with_its_outcome(broker: str, tmp_path: Path) -> None:
    settings = fresh_settings(broker, tmp_path, outcome_sample=1000, quality_window_days=365.0)  # the whole run
    quitters = [f"q{i:02d}" for i in range(20)]
    stayers = [f"s{i:02d}" for i in range(20)]
    events: list[Event] = [e for u in quitters for e in buyer_events(u, 30)]
    events += [e for u in stayers for e in buyer_events(u, 150)]
    events.sort(key=lambda e: e.ts_ms)
    records = [(e.user_id.encode(), encode_event(e), "valid", e.ts_ms) for e in events]
    purchases: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event.type is EventType.PURCHASE:
            purchases[event.user_id].append(event.ts_ms)

    with running_worker(settings, tmp_path / "worker.log"):
        # Ten days at a time, each slice consumed before the next, as a live stream comes.
        sent = 0
        for _, group in itertools.groupby(records, key=lambda r: (r[3] - T0) // (10 * DAY_MS)):
            chunk = [r[:3] for r in group]
            produce_records(settings, chunk)
            sent += len(chunk)
            wait_for_metric(settings, "retention_events_total", sent)
        wait_for_metric(settings, "retention_outcomes_total", 40 * 4)  # cutoffs on days 11, 41, 71, 101
        samples = settled_metrics(settings, quiet_s=2.0)
        outcomes = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.outcomes_topic, settings.partitions)]
        report_path = tmp_path / "model.json"
        reported = subprocess.run(
            [sys.executable, "-m", "streams.cli", "report", "model", "--from-kafka", "--json", str(report_path)],
            env=worker_env(settings),
            cwd=REPO,
            capture_output=True,
            timeout=120,
        )

    assert sum(v for _, v in samples["retention_outcomes_total"]) == len(outcomes)
    horizon = 30 * DAY_MS
    closed = [c for c in range(cutoff_after(T0, horizon), events[-1].ts_ms - horizon, horizon)]
    assert len(closed) >= 3 and {o["scored_at"] for o in outcomes} == {iso_ms(c) for c in closed}
    # One outcome per user per closed cutoff, none twice.
    assert Counter((o["user_id"], o["scored_at"]) for o in outcomes) == {
        (u, iso_ms(c)): 1 for u in quitters + stayers for c in closed
    }
    # The risk is the bundled model's on the offline features as of the cutoff (one feature code).
    per_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        per_user[event.user_id].append(event)
    keys, matrix = features_at(per_user, [(o["user_id"], parse_ms(o["scored_at"])) for o in outcomes])
    offline = dict(zip(keys, ChurnModel(resolve_bundle(BUNDLED_MODEL), device="cpu").load().score_many(matrix)))
    for outcome in outcomes:
        assert outcome["trigger"] == "cutoff" and outcome["horizon_days"] == 30
        assert outcome["risk"] == pytest.approx(offline[outcome["user_id"], parse_ms(outcome["scored_at"])], abs=2e-6)
        start = [t for t in purchases[outcome["user_id"]] if iso_ms(t) > outcome["scored_at"]]
        within = [t for t in start if iso_ms(t) <= outcome["resolved_at"]]
        assert outcome["churned"] is (not within), outcome
        assert outcome["purchased_at"] == (iso_ms(min(within)) if within else None)
    assert any(o["churned"] for o in outcomes if o["user_id"] in quitters)
    assert not any(o["churned"] for o in outcomes if o["user_id"] in stayers)

    version = outcomes[0]["model_version"]
    figures = live_quality(
        [bool(o["churned"]) for o in outcomes],
        [float(o["risk"]) for o in outcomes],
        [o["tier"] == "high" for o in outcomes],
    )
    live = {n: {lab["version"]: v for lab, v in samples[n]} for n in samples if n.startswith("retention_model_")}
    assert live["retention_model_live_outcomes"][version] == figures.n
    assert live["retention_model_live_brier"][version] == pytest.approx(figures.brier)
    assert live["retention_model_live_roc_auc"][version] == pytest.approx(figures.roc_auc)
    assert version in live["retention_model_test_roc_auc"]  # the bundle's own figure beside it
    # `retention report model` reads the same topic and writes the same figures.
    assert reported.returncode == 0, reported.stderr.decode()[-2000:]
    assert json.loads(report_path.read_text())["model_live"] == json.loads(json.dumps(figures.as_dict()))
