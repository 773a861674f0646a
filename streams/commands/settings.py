"""``retention settings``: every setting, its default and meaning, or the values in force."""

from __future__ import annotations

import argparse
from typing import Any

from streams.commands.common import load_settings
from streams.reference import settings_table, settings_text
from streams.settings import Settings, add_settings_flags

__all__ = ["register"]


def cmd_settings(args: argparse.Namespace) -> int:
    """Print the settings table, or the effective settings."""
    if args.effective:
        settings = load_settings(args)
        from streams.settings import SECRETS

        for name in Settings.__dataclass_fields__:
            value = getattr(settings, name)
            shown = ("***" if value else "") if name in SECRETS else value
            print(f"RETENTION_{name.upper()}={shown}")
    elif args.markdown:
        print(settings_table())
    else:
        import shutil

        print(settings_text(width=min(100, shutil.get_terminal_size((100, 24)).columns)))
    return 0


def register(sub: Any) -> None:
    """Add ``retention settings``."""
    p = sub.add_parser("settings", help="the settings, their defaults and meaning (--effective: the values in force)")
    p.add_argument("--effective", action="store_true", help="print the values in effect instead")
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    add_settings_flags(p)
    p.set_defaults(func=cmd_settings)
