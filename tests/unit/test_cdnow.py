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
