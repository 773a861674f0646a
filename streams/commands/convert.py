"""``retention convert``: a CSV transaction log into schema-v1 events."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a CSV transaction log to schema-v1 events (JSONL)."""
    from training.convert import TransactionColumns, convert_transactions

    columns = TransactionColumns(
        user=args.user_column,
        timestamp=args.time_column,
        amount=args.amount_column,
        order=args.order_column,
        cancelled=args.cancelled_column,
        assume_tz=args.assume_tz,
        item=args.item_column,
        category=args.category_column,
        quantity=args.quantity_column,
        unit_price=args.unit_price_column,
    )
    try:
        n = convert_transactions(args.csv, args.out, columns)
    except (ValueError, OSError) as exc:
        print(f"retention convert: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} events to {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add ``retention convert``."""
    p = sub.add_parser("convert", help="convert a CSV transaction log into schema-v1 events")
    p.add_argument("csv", help="CSV with one row per transaction")
    p.add_argument("--out", required=True, help="the .jsonl event log to write")
    p.add_argument("--user-column", default="user_id")
    p.add_argument("--time-column", default="timestamp")
    p.add_argument("--amount-column", default="amount")
    p.add_argument("--order-column")
    p.add_argument("--cancelled-column", help="a column that is 1/true/yes for cancelled orders")
    p.add_argument(
        "--item-column", help="line-level CSV: the item of each row; rows sharing --order-column become one order"
    )
    p.add_argument("--category-column", help="line-level CSV: the item's category")
    p.add_argument("--quantity-column", help="line-level CSV: units of the item in the order")
    p.add_argument(
        "--unit-price-column", help="line-level CSV: the unit price (order total = their sum when no amount column)"
    )
    p.add_argument("--assume-tz", default="UTC", help="time zone of timestamps that carry none")
    p.set_defaults(func=cmd_convert)
