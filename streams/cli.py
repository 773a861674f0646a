"""The ``retention`` command: the parser made of each command module's ``register``, and one-line errors.

A new command is a module with ``register(sub)`` (it adds its sub-parser and sets
``func``) and one more entry in :data:`COMMANDS`; a new ``evaluate`` sub-command
is one more entry in :data:`streams.commands.evaluate.EVALUATIONS`.
"""

from __future__ import annotations

import argparse
import sys

from retention_model.errors import BrokerUnavailableError, RetentionError, SettingsError
from streams.commands import (
    broker,
    circuit,
    convert,
    demo,
    dlq,
    evaluate,
    export,
    forget,
    report,
    settings,
    simulate,
    tail,
    train,
    worker,
)

__all__ = ["COMMANDS", "build_parser", "main"]

#: Every module that adds sub-commands, in the order ``--help`` and the README list them.
COMMANDS = (
    broker,
    worker,
    simulate,
    train,
    convert,
    evaluate,
    report,
    demo,
    dlq,
    export,
    forget,
    circuit,
    tail,
    settings,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``retention`` command."""
    parser = argparse.ArgumentParser(prog="retention", description="Real-time churn scoring and retention on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``retention`` console script: exit 2 for a local mistake, 3 for no broker."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"retention {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokerUnavailableError as exc:
        print(f"retention {args.command}: {exc}", file=sys.stderr)
        return 3
    except RetentionError as exc:
        print(f"retention {args.command}: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        # An input a person named is missing or unreadable: say which, no traceback.
        print(f"retention {args.command}: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
