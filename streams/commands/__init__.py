"""The ``retention`` sub-commands, one module each (or a small group), each adding itself with ``register(sub)``.

:data:`streams.cli.COMMANDS` lists them; the worker's start-up itself lives in
:mod:`streams.startup`.
"""

from __future__ import annotations

__all__: list[str] = []
