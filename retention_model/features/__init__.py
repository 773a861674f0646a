"""One feature definition for offline training and online serving."""

from __future__ import annotations

from retention_model.features.definitions import FEATURE_CODE_VERSION, FEATURE_NAMES
from retention_model.features.derive import feature_dict, feature_matrix, feature_vector
from retention_model.features.describe import profile, reasons
from retention_model.features.state import UserState, apply_event, dump_state, load_state

__all__ = [
    "FEATURE_CODE_VERSION",
    "FEATURE_NAMES",
    "UserState",
    "apply_event",
    "dump_state",
    "feature_dict",
    "feature_matrix",
    "feature_vector",
    "load_state",
    "profile",
    "reasons",
]
