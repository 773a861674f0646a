"""Per-user feature state: updated event by event, compact, versioned.

:mod:`.core` holds the state and the fold (:func:`apply_event`), :mod:`.codec` its
bytes (:func:`dump_state`, :func:`load_state`: at most 1 KiB, every older version
read), :mod:`.merge` the merge of two partial histories. Importers use this package.
"""

from __future__ import annotations

from retention_model.features.state.codec import dump_state, load_state
from retention_model.features.state.core import (
    APPLIED,
    CATEGORY_HALF_LIFE_MS,
    DAY_MS,
    DUPLICATE_EVENT,
    HALF_LIVES_MS,
    HOUR_MS,
    MAX_CATEGORY_BYTES,
    N_HALF_LIVES,
    N_SIGNALS,
    PURCHASES_SIGNAL,
    REANCHOR_AFTER_MS,
    RECENT_EVENT_IDS_KEPT,
    RECENT_ITEMS_KEPT,
    RECENT_ORDER_IDS_KEPT,
    RECENT_PURCHASES_KEPT,
    REPLAYED,
    STATE_VERSION,
    TOP_CATEGORIES_KEPT,
    ApplyOutcome,
    UserState,
    apply_event,
    decay_factor,
    item_hash,
)
from retention_model.features.state.merge import merge_states

__all__ = [
    "APPLIED",
    "CATEGORY_HALF_LIFE_MS",
    "DAY_MS",
    "DUPLICATE_EVENT",
    "HALF_LIVES_MS",
    "HOUR_MS",
    "MAX_CATEGORY_BYTES",
    "N_HALF_LIVES",
    "N_SIGNALS",
    "PURCHASES_SIGNAL",
    "REANCHOR_AFTER_MS",
    "RECENT_EVENT_IDS_KEPT",
    "RECENT_ITEMS_KEPT",
    "RECENT_ORDER_IDS_KEPT",
    "RECENT_PURCHASES_KEPT",
    "REPLAYED",
    "STATE_VERSION",
    "TOP_CATEGORIES_KEPT",
    "ApplyOutcome",
    "UserState",
    "apply_event",
    "decay_factor",
    "dump_state",
    "item_hash",
    "load_state",
    "merge_states",
]
