"""``retention evaluate model``: the bundle beside its references on the same rows (issue 20)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retention_model.errors import EventLogError
from retention_model.events import Event, EventType, encode_event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import events_by_user, features_at
from retention_model.features.state import DAY_MS
from streams.cli import main
from training.dataset import parse_cutoff
from training.evaluate import evaluate_model, plan_evaluation
from training.eventlog import read_event_log
from training.metrics import _auc_resampled, _auc_rows, paired_differences
from training.replay import EventLog, summarise

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A simulated log and a bundle trained on what precedes 2025-05-20 (the linear candidates only: fast)."""
    from training.candidates import CANDIDATES
    from training.dataset import TrainConfig, parse_cutoff
    from training.simulator import SimConfig, simulate
    from training.train import train

    folder = tmp_path_factory.mktemp("evaluate")
    log = folder / "sim.jsonl"
    assert main(["simulate", "--users", "300", "--days", "200", "--seed", "21", "--out", str(log)]) == 0
    config = TrainConfig(cutoff_ms=parse_cutoff("2025-05-20"), epochs=1)
    linear = tuple(spec for spec in CANDIDATES if spec.kind == "linear")
    events = list(simulate(SimConfig(users=300, days=200, seed=21)))
    bundle = train(events, folder / "registry", config, source=str(log), candidates=linear)
    return log, bundle


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_scores_hold_one_row_per_user_with_the_label_the_model_and_each_baseline(
    trained: tuple[Path, Path], tmp_path: Path, suffix: str
) -> None:
    log, bundle = trained
    scores_path = tmp_path / f"scores{suffix}"
    args = ["evaluate", "model", "--events", str(log), "--model", str(bundle), "--cutoff", "2025-05-20"]
    assert main([*args, "--scores", str(scores_path), "--out", str(tmp_path / "out")]) == 0
    frame = pd.read_csv(scores_path) if suffix == ".csv" else pd.read_parquet(scores_path)
    assert list(frame.columns) == ["user_id", "churned", "model", "rfm_logistic_regression", "bgnbd"]
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert len(frame) == report["rows"]["test"] == frame["user_id"].nunique()
    assert set(frame["churned"]) == {0, 1}
    assert frame[["model", "rfm_logistic_regression", "bgnbd"]].apply(lambda c: c.between(0, 1).all()).all()
    assert report["test_cutoff"] == "2025-05-20" and report["horizon_days"] == 30
    for name in ("rfm_logistic_regression", "bgnbd"):
        # The report's figures are those of the written scores.
        from sklearn.metrics import roc_auc_score

        assert report[name]["roc_auc"] == pytest.approx(roc_auc_score(frame["churned"], frame[name]))
        auc = report["model_minus_baseline"][name]["roc_auc"]
        assert auc["ci95_low"] <= auc["difference"] <= auc["ci95_high"]
        assert auc["difference"] == pytest.approx(report["model"]["roc_auc"] - report[name]["roc_auc"])
    assert report["rows"]["filters"]["max_silence_days"] == 120  # the bundle's, said in the report


def test_refusals_are_one_line_before_tensorflow_loads(trained: tuple[Path, Path]) -> None:
    log, bundle = trained
    cases = [
        # The bundle learned from this log up to 2025-05-20: an earlier cutoff would flatter it.
        (["--cutoff", "2025-05-01"], "trained on this log with labels up to 2025-05-20"),
        (["--cutoff", "2025-07-10"], "need events up to 2025-08-09"),
        (["--cutoff", "next week"], "not an ISO-8601 date"),
    ]
    for extra, message in cases:
        argv = ["evaluate", "model", "--events", str(log), "--model", str(bundle), *extra]
        code = (
            "import sys; from streams.cli import main; rc = main(sys.argv[1:]); "
            "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(rc)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
        )
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("retention ")]
        assert len(errors) == 1 and message in errors[0], done.stderr
        assert "Traceback" not in done.stderr and done.stdout.strip() == "no tensorflow"


def test_a_horizon_other_than_the_bundles_warns(trained: tuple[Path, Path], tmp_path: Path) -> None:
    log, bundle = trained
    args = ["evaluate", "model", "--events", str(log), "--model", str(bundle), "--cutoff", "2025-05-20"]
    assert main([*args, "--horizon-days", "14", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["horizon_days"] == 14 and "30-day horizon" in report["warnings"][0]


def _late_and_retried(events: list[Event]) -> list[Event]:
    """The log with late events and retries (every 101st sent again).

    Every 37th event arrives 1,000 events (about three days) later, so some arrive
    after a cutoff they precede: rows that only a replay in time order gets right.
    """
    out = list(events)
    for i in range(len(out) - 1001, 0, -37):
        out.insert(i + 1000, out.pop(i))
    for i in range(len(out) - 10, 0, -101):
        out.insert(i + 5, out[i])
    return out


def test_a_log_read_in_chunks_is_judged_exactly_as_the_whole_log_in_memory(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """``evaluate model`` streams the log (issue 20): same rows, figures and scores as the log held whole."""
    log, bundle = trained
    events = _late_and_retried(read_event_log(log))
    path = tmp_path / "late.jsonl"
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    assert len(summarise(events).late_users) > 20  # the users the replay must fold as features_at does
    cutoff = parse_cutoff("2025-05-20")

    whole = plan_evaluation(events, bundle, cutoff_ms=cutoff)
    report, curves, test = evaluate_model(events, whole)
    chunked = EventLog(path, chunk_rows=997)
    streamed = plan_evaluation(summarise(chunked), bundle, cutoff_ms=cutoff)
    assert streamed.prior == whole.prior and streamed.config == whole.config
    report_s, curves_s, test_s = evaluate_model(chunked, streamed)
    assert test_s.keys == test.keys
    np.testing.assert_array_equal(test_s.features, test.features)
    assert json.dumps(report_s) == json.dumps(report)
    for name, values in curves.items():
        np.testing.assert_array_equal(curves_s[name], values)

    # The rows as the whole-log replay (features_at) gives them, with the churn label by hand.
    per_user = events_by_user(events)
    keys, matrix = features_at(per_user, [(user, cutoff) for user in per_user])
    kept = matrix[:, FEATURE_NAMES.index("recency_days")] <= 120
    assert test_s.keys == [k for k, k_ok in zip(keys, kept, strict=True) if k_ok]
    np.testing.assert_array_equal(test_s.features, matrix[kept])
    horizon = cutoff + 30 * DAY_MS
    bought = [
        any(e.type is EventType.PURCHASE and cutoff < e.ts_ms <= horizon for e in per_user[user])
        for user, _ in test_s.keys
    ]
    np.testing.assert_array_equal(test_s.churn, 1.0 - np.asarray(bought, dtype=float))

    # The command reads the file in chunks too, and writes the same figures.
    args = ["evaluate", "model", "--events", str(path), "--model", str(bundle), "--cutoff", "2025-05-20"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text()) == json.loads(json.dumps(report))


def test_bad_rows_stop_a_read_or_are_counted_with_skip_invalid(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    good = b'{"event_id":"e1","user_id":"u1","type":"purchase","ts":1740000000000,"price":10}'
    bad = b'{"event_id":"e2","user_id":"u1","type":"purchase","ts":1740000000000,"price":10,"quantity":74215}'
    log.write_bytes(b"\n".join([good, bad, good.replace(b"e1", b"e3")]) + b"\n")
    with pytest.raises(EventLogError, match=r"log.jsonl:2: invalid_value: quantity 74215 is outside 1..10000"):
        read_event_log(log)
    skipped: Counter[str] = Counter()
    assert len(read_event_log(log, skip_invalid=True, skipped=skipped)) == 2
    assert skipped == {"invalid_value": 1}
    frame = tmp_path / "log.csv"
    frame.write_text("event_id,user_id,type,ts,price,quantity\ne1,u1,purchase,1740000000000,10,2\ne2,u1,view,x,,\n")
    with pytest.raises(EventLogError, match=r"row 2: invalid_timestamp: ts 'x' is not ISO-8601"):
        read_event_log(frame)
    assert [e.quantity for e in read_event_log(frame, skip_invalid=True)] == [2]


def test_paired_differences_by_hand() -> None:
    rng = np.random.default_rng(7)
    labels = (rng.random(2000) < 0.4).astype(float)
    good = np.clip(labels * 0.5 + rng.random(2000) * 0.5, 0.01, 0.99)
    same = paired_differences(labels, good, good.copy())
    for name in ("roc_auc", "brier", "log_loss"):
        assert same[name]["difference"] == 0 and same[name]["ci95_low"] == same[name]["ci95_high"] == 0
        assert same[name]["verdict"] == "tie"
    noise = rng.random(2000)
    better = paired_differences(labels, good, noise)
    assert better["roc_auc"]["verdict"] == "better" and better["brier"]["verdict"] == "better"
    assert better["roc_auc"]["ci95_low"] > 0.2
    worse = paired_differences(labels, noise, good)
    assert worse["roc_auc"]["verdict"] == "worse" and worse["log_loss"]["verdict"] == "worse"
    # Fixed seed: the same interval every time.
    assert paired_differences(labels, good, noise) == better


@pytest.mark.parametrize(("rows", "decimals"), [(40, 1), (3000, 2), (3000, None)])
def test_the_bootstrap_auc_is_the_midrank_auc_to_the_bit(rows: int, decimals: int | None) -> None:
    """Counting draws per tie group gives each resample's midrank ROC-AUC exactly, ties and all."""
    rng = np.random.default_rng(rows)
    labels = (rng.random(rows) < 0.3).astype(float)
    scores = rng.random(rows) if decimals is None else np.round(rng.random(rows), decimals)
    idx = rng.integers(0, rows, size=(64, rows))
    np.testing.assert_array_equal(_auc_resampled(labels, scores, idx), _auc_rows(labels[idx], scores[idx]))
