"""Per-user feature state: updated event by event, compact, versioned.

:mod:`.core` holds the state and the fold (:func:`apply_event`), :mod:`.bought` the items
bought it keeps for "buy again", :mod:`.codec` its bytes (:func:`dump_state`,
:func:`load_state`: at most 1.25 KiB, every older version read), :mod:`.merge` the merge
of two partial histories. Importers use this package: it exports what ``core`` exports.
"""

from __future__ import annotations

from retention_model.features.state import core
from retention_model.features.state.codec import dump_state, load_state
from retention_model.features.state.core import *  # noqa: F403 (core.__all__ is the package's)
from retention_model.features.state.merge import merge_states

__all__ = [*core.__all__, "dump_state", "load_state", "merge_states"]
