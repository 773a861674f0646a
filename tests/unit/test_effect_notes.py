"""The effect report says when there is nothing to count yet, and when a sample is too small to trust."""

from __future__ import annotations

from pathlib import Path

from retention_model.events import Event, EventType
from retention_model.policy.policy import iso_ms
from training.effect import SMALL_SAMPLE, effect_report, write_effect_report

T0 = 1_735_689_600_000
DAY = 86_400_000


def decision(user: str, day: int, action: str) -> dict[str, object]:
    return {
        "decision_id": f"d-{user}",
        "user_id": user,
        "kind": "recommendation",
        "action": action,
        "tier": "medium",
        "event_time": iso_ms(T0 + day * DAY),
    }


def test_no_decisions_reads_as_no_decisions_yet(tmp_path: Path) -> None:
    report = effect_report([], [Event("e", "u", EventType.VIEW, T0)], horizon_days=30)
    assert report["groups"] == {}
    assert report["notes"][0].startswith("no decisions yet")
    written = write_effect_report(report, tmp_path)
    assert "no decisions yet" in (tmp_path / "effect.md").read_text() and written


def test_decisions_inside_their_horizon_are_said_to_be_pending() -> None:
    events = [Event("e", "u1", EventType.VIEW, T0 + 5 * DAY)]
    report = effect_report([decision("u1", 1, "sent")], events, horizon_days=30)
    assert report["decisions_pending"] == 1
    assert any("inside their 30-day horizon" in note for note in report["notes"])


def test_a_small_holdout_is_flagged_with_its_size() -> None:
    users = [f"u{i}" for i in range(60)]
    decisions = [decision(u, 1, "held_out" if i < 5 else "sent") for i, u in enumerate(users)]
    events = [Event(f"p{u}", u, EventType.PURCHASE, T0 + 10 * DAY, price=5.0) for u in users[::2]]
    events.append(Event("late", "x", EventType.VIEW, T0 + 60 * DAY))
    report = effect_report(decisions, events, horizon_days=30)
    holdout_notes = [note for note in report["notes"] if "holdout users in overall number 5" in note]
    assert holdout_notes and f"under {SMALL_SAMPLE}" in holdout_notes[0]
    assert not any("treated users in overall" in note for note in report["notes"])  # 55 treated: enough
