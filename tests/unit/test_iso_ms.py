"""The ISO timestamps every score and intervention record carries."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from retention_model.policy.policy import iso_ms
from retention_model.schema import MAX_TS_MS, MIN_TS_MS


@example(0)
@example(MIN_TS_MS)
@example(MAX_TS_MS - 1)
@example(951_782_400_000)  # 2000-02-29T00:00:00.000Z, a leap day
@example(1_700_000_000_999)
@given(st.integers(min_value=0, max_value=MAX_TS_MS - 1))
def test_iso_ms_matches_datetime(ts_ms: int) -> None:
    """Integer arithmetic gives what datetime formats, to the millisecond, over the schema's range."""
    moment = datetime.fromtimestamp(ts_ms // 1000, tz=UTC).replace(microsecond=ts_ms % 1000 * 1000)
    assert iso_ms(ts_ms) == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
