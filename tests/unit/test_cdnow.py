"""The CDNOW data path reproduces the published split figures."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA
from training.cdnow import CdnowSplit, load_cdnow

CDNOW = SHARED_DATA / "cdnow" / "CDNOW_master.txt"


@pytest.mark.skipif(
    not CDNOW.is_file(), reason=f"CDNOW data not at {CDNOW} (see training/cdnow.py for where to get it)"
)
def test_cdnow_split_matches_the_reference_figures() -> None:
    daily = load_cdnow(CDNOW)
    split = CdnowSplit()
    assert daily["customer"].nunique() == 23_570
    assert len(daily) == 67_591  # customer-days
    holdout = daily[
        (daily["ts_ms"] >= split.ms(split.holdout_start))
        & (daily["ts_ms"] <= split.ms(split.holdout_end, end_of_day=True))
    ]
    assert len(holdout) == 19_684
    assert holdout["customer"].nunique() == 7_058


def test_missing_data_says_where_to_get_it() -> None:
    with pytest.raises(FileNotFoundError, match="lifetimes"):
        load_cdnow("/nonexistent/CDNOW_master.txt")


def test_weekly_history_puts_each_purchase_day_in_its_week() -> None:
    """The ceiling probe sees the whole record: a day's purchase lands in its own week's column."""
    import numpy as np
    import pandas as pd

    from training.cdnow import DAY_MS, _weekly_history

    start = CdnowSplit().ms("1997-01-01")
    calibration = pd.DataFrame(
        {
            "customer": ["a", "a", "b", "a"],
            "ts_ms": [start, start + 1 * DAY_MS, start + 8 * DAY_MS, start + 20 * DAY_MS],
            "dollars": [10.0, 5.0, 7.0, -3.0],
            "cds": [1, 2, 1, 1],
        }
    )
    cutoff = start + 21 * DAY_MS - 1  # three whole weeks
    history = _weekly_history(calibration, ["a", "b"], cutoff)
    # 4 RFM columns, CDs, then 3 weeks of purchase days and 3 of log spend.
    assert history.shape == (2, 4 + 1 + 3 + 3)
    np.testing.assert_array_equal(history[:, 5:8], [[2, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(history[:, 8:11], np.log1p([[15.0, 0.0, 0.0], [0.0, 7.0, 0.0]]))
    np.testing.assert_array_equal(history[:, 4], [4, 1])
