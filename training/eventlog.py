"""Event logs read from files (JSONL, Parquet, CSV) or data frames, each row held to the stream's decoder.

File and frame reading is training's concern; the core's offline replay
(:mod:`retention_model.features.offline`) takes events, wherever they came from.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np
import orjson
import pandas as pd

from retention_model.errors import EventLogError
from retention_model.events import DecodeError, Event, decode_event

__all__ = ["decode_rows", "events_from_frame", "read_event_log"]


def read_event_log(path: str | Path, *, skip_invalid: bool = False, skipped: Counter[str] | None = None) -> list[Event]:
    """Read a JSONL, Parquet or CSV event log in schema v1, in file order.

    Every row is validated by the stream's decoder. A bad row raises
    :class:`EventLogError` with its place and reason, because a training set with
    silently dropped rows is worse than none; with ``skip_invalid`` it is left out
    and counted by reason in ``skipped`` instead, for the caller to report.
    """
    path = Path(path)
    if path.suffix in {".jsonl", ".json", ".ndjson"}:
        with path.open("rb") as handle:
            rows = (
                (f"{path}:{line_no}", line.rstrip(b"\n"))
                for line_no, line in enumerate(handle, start=1)
                if line.strip()
            )
            return decode_rows(rows, skip_invalid, skipped)
    if path.suffix == ".parquet":
        return events_from_frame(pd.read_parquet(path), skip_invalid=skip_invalid, skipped=skipped, source=str(path))
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={"user_id": str, "event_id": str})
        return events_from_frame(frame, skip_invalid=skip_invalid, skipped=skipped, source=str(path))
    msg = f"cannot read event log {path}: expected .jsonl, .parquet or .csv"
    raise EventLogError(msg)


def decode_rows(rows: Iterable[tuple[str, bytes]], skip_invalid: bool, skipped: Counter[str] | None) -> list[Event]:
    """Decode (place, payload) rows; raise on the first bad one, or count and skip it."""
    events: list[Event] = []
    for place, payload in rows:
        decoded = decode_event(payload)
        if isinstance(decoded, Event):
            events.append(decoded)
        elif isinstance(decoded, DecodeError):
            if not skip_invalid:
                msg = f"{place}: {decoded.reason}: {decoded.detail} (--skip-invalid counts and skips such rows)"
                raise EventLogError(msg)
            if skipped is not None:
                skipped[decoded.reason] += 1
    return events


_FRAME_FIELDS: Final = (
    "event_id",
    "user_id",
    "type",
    "item_id",
    "category",
    "price",
    "quantity",
    "order_id",
    "rating",
    "session_id",
    "coupon_id",
    "intervention_id",
    "items",
)


def events_from_frame(
    frame: pd.DataFrame,
    *,
    skip_invalid: bool = False,
    skipped: Counter[str] | None = None,
    source: str = "frame",
) -> list[Event]:
    """Convert a DataFrame in schema v1 (``ts`` as epoch ms or tz-aware datetimes).

    Each row goes through the stream's decoder, so a frame is held to the same
    rules as a JSONL log; rows of an unknown type are skipped, as the worker does.
    """
    ts = frame["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        if ts.dt.tz is None:
            msg = "event log column ts has no time zone; localise it to UTC first"
            raise EventLogError(msg)
        # as_unit: pandas 2 stores nanoseconds, pandas 3 may store micro- or milliseconds.
        ts_list: list[object] = ts.dt.tz_convert("UTC").dt.as_unit("ms").astype("int64").tolist()
    else:
        ts_list = ts.tolist()
    columns = {name: frame[name].tolist() for name in _FRAME_FIELDS if name in frame.columns}

    def rows() -> Iterator[tuple[str, bytes]]:
        for i, ts_value in enumerate(ts_list):
            record: dict[str, object] = {"ts": _plain(ts_value, numeric=True)}
            for name, values in columns.items():
                value = _plain(values[i], numeric=name in _NUMERIC_FIELDS)
                if value is not None:
                    record[name] = value
            yield f"{source}: row {i + 1}", orjson.dumps(record)

    return decode_rows(rows(), skip_invalid, skipped)


#: Columns a CSV reader leaves as text when one cell in them is not a number.
_NUMERIC_FIELDS: Final = frozenset({"price", "quantity", "rating"})


def _plain(value: object, *, numeric: bool = False) -> object:
    """A frame cell as the JSON value a producer would send: NaN is absent, 2.0 is 2.

    In a numeric column, text that reads as a number is that number: one bad cell
    makes a CSV reader keep the whole column as text, and the good rows must not
    fail for it.
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.ndarray):  # a list column (an order's items) read from Parquet
        return [{k: _plain(v) for k, v in line.items()} if isinstance(line, dict) else line for line in value]
    if numeric and isinstance(value, str):
        for parse in (int, float):
            try:
                value = parse(value)
                break
            except ValueError:
                continue
        if isinstance(value, float) and math.isnan(value):
            return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
