"""Outcomes in the stream: a worker on the real broker joins its own scores with what users did next.

40 users buy every 5 days; half stop after day 30. Each outcome on the outcomes
topic must name a score the worker published, say churned exactly when the
events hold no purchase within 30 days after it, and the live quality gauges
must be the figures of those outcomes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from retention_model.events import Event, EventType, encode_event
from retention_model.features.state import DAY_MS
from retention_model.monitoring.quality import live_quality
from retention_model.policy.policy import iso_ms
from streams.producer import produce_records

from .helpers import REPO, fresh_settings, read_topic, running_worker, settled_metrics, wait_for_metric, worker_env
from .test_silence import T0, buyer_events

pytestmark = pytest.mark.integration


def test_each_sampled_score_comes_back_with_its_outcome(broker: str, tmp_path: Path) -> None:
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
        # Ten days at a time, each slice consumed before the next: a user is scored once per
        # batch, so one batch of all 150 days would score each user once, at their last event.
        sent = 0
        for _, group in itertools.groupby(records, key=lambda r: (r[3] - T0) // (10 * DAY_MS)):
            chunk = [r[:3] for r in group]
            produce_records(settings, chunk)
            sent += len(chunk)
            wait_for_metric(settings, "retention_events_total", sent)
        wait_for_metric(settings, "retention_outcomes_total", 40)
        samples = settled_metrics(settings, quiet_s=2.0)
        outcomes = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.outcomes_topic, settings.partitions)]
        report_path = tmp_path / "model.json"
        reported = subprocess.run(
            [sys.executable, "-m", "streams.cli", "report", "model", "--json", str(report_path)],
            env=worker_env(settings),
            cwd=REPO,
            capture_output=True,
            timeout=120,
        )
        scores = [orjson.loads(v) for _, v, _ in read_topic(broker, settings.scores_topic, settings.partitions)]

    assert sum(v for _, v in samples["retention_outcomes_total"]) == len(outcomes)
    published = {(s["user_id"], s["event_time"]): s for s in scores}
    by_user: dict[str, list[dict[str, object]]] = defaultdict(list)
    for outcome in outcomes:
        score = published[outcome["user_id"], outcome["scored_at"]]  # a score the worker published
        assert (outcome["risk"], outcome["tier"], outcome["model_version"]) == (
            score["risk"],
            score["tier"],
            score["model_version"],
        )
        scored = next(
            s for s in scores if s["user_id"] == outcome["user_id"] and s["event_time"] == outcome["scored_at"]
        )
        assert outcome["trigger"] == scored["trigger"]
        start = [t for t in purchases[outcome["user_id"]] if iso_ms(t) > outcome["scored_at"]]
        within = [t for t in start if iso_ms(t) <= outcome["resolved_at"]]
        assert outcome["churned"] is (not within), outcome
        assert outcome["purchased_at"] == (iso_ms(min(within)) if within else None)
        by_user[outcome["user_id"]].append(outcome)
    for user, resolved in by_user.items():  # one score pending per user at a time
        resolved.sort(key=lambda o: str(o["scored_at"]))
        assert all(str(b["scored_at"]) >= str(a["resolved_at"]) for a, b in itertools.pairwise(resolved)), user
    assert set(by_user) == set(quitters) | set(stayers)  # every user's first score resolved
    assert any(o["churned"] for u in quitters for o in by_user[u])
    assert not any(o["churned"] for u in stayers for o in by_user[u])

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
