"""Treatment logs: the randomised record an uplift model learns from (JSONL, one decision a line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retention_model.events import parse_timestamp_ms
from training.uplift.campaign import Campaign

__all__ = ["TreatmentRecord", "read_treatment_log", "write_treatment_log"]


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
