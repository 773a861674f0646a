"""Does a sequence model beat the MLP on window features? Judged on the same split.

Three models are fitted on the identical time split of ``train`` (earlier cutoffs
to train, the next to validate, the last to test), each for the churn label:

* ``mlp``: the shipped architecture on the 96 window features;
* ``gru``: a GRU over the user's last 32 events (``retention_model.features.sequence``);
* ``gru_features``: the GRU's summary joined with the window features.

A sequence model wins only if its validation log loss is lower than the MLP's by
more than chance: the 95% interval of the paired bootstrap difference (per row,
1,000 resamples) must lie above zero. Test figures are reported for all three.
The sequence model would become the default only by winning here, and then
it would need the last events kept in the worker's state (a second table: the
feature state has no room left under 1 KiB).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from retention_model.events import Event
from retention_model.features.definitions import FEATURE_NAMES
from retention_model.features.offline import events_by_user
from retention_model.features.sequence import SEQUENCE_COLUMNS, SEQUENCE_LENGTH, sequence_batch
from retention_model.model.bundle import normalise
from training.train import TrainConfig, classification_metrics, time_split

__all__ = ["compare_sequence_model"]

log = logging.getLogger(__name__)

MODELS = ("mlp", "gru", "gru_features")


def _build(kind: str, n_features: int, config: TrainConfig) -> Any:
    import keras

    seq_in = keras.Input(shape=(SEQUENCE_LENGTH, len(SEQUENCE_COLUMNS)), name="events")
    feat_in = keras.Input(shape=(n_features,), name="features")
    parts = []
    if kind in ("gru", "gru_features"):
        masked = keras.layers.Masking(mask_value=0.0)(seq_in)  # padding rows are all zeros
        parts.append(keras.layers.GRU(32)(masked))
    if kind in ("mlp", "gru_features"):
        parts.append(feat_in)
    hidden = parts[0] if len(parts) == 1 else keras.layers.Concatenate()(parts)
    for units in config.hidden:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
        hidden = keras.layers.Dropout(0.1)(hidden)
    out = keras.layers.Dense(1, activation="sigmoid", name="churn")(hidden)
    model = keras.Model([seq_in, feat_in], out, name=f"churn_{kind}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return model


def compare_sequence_model(events: list[Event], config: TrainConfig) -> dict[str, Any]:
    """Fit the three models on one time split; report validation and test figures and the winner."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.metrics import log_loss

    split = time_split(events, config)
    per_user = events_by_user(events)
    sets = {"train": split.train, "validation": split.validation, "test": split.test}
    sequences = {name: sequence_batch(per_user, data.keys) for name, data in sets.items()}
    transformed = np.sign(split.train.features) * np.log1p(np.abs(split.train.features))
    mean, std = transformed.mean(axis=0), transformed.std(axis=0)
    std[std < 1e-9] = 1.0
    inputs = {name: [sequences[name], normalise(data.features, mean, std)] for name, data in sets.items()}

    report: dict[str, Any] = {
        "rows": {name: len(data.keys) for name, data in sets.items()},
        "sequence_length": SEQUENCE_LENGTH,
        "sequence_columns": list(SEQUENCE_COLUMNS),
        "window_features": len(FEATURE_NAMES),
        "horizon_days": config.horizon_days,
        "models": {},
    }
    validation_losses: dict[str, np.ndarray] = {}
    for kind in MODELS:
        keras.utils.set_random_seed(config.seed)
        model = _build(kind, len(FEATURE_NAMES), config)
        model.fit(
            inputs["train"],
            split.train.churn,
            validation_data=(inputs["validation"], split.validation.churn),
            epochs=config.epochs,
            batch_size=config.batch_size,
            callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=4, restore_best_weights=True)],
            verbose=0,
        )
        entry: dict[str, Any] = {"parameters": int(model.count_params())}
        for name in ("validation", "test"):
            scores = np.asarray(model.predict(inputs[name], batch_size=4096, verbose=0)).reshape(-1)
            labels = sets[name].churn
            clipped = np.clip(scores, 1e-7, 1 - 1e-7)
            entry[name] = {**classification_metrics(labels, scores), "log_loss": float(log_loss(labels, clipped))}
            if name == "validation":
                validation_losses[kind] = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
        report["models"][kind] = entry
        log.info("%s: validation %s", kind, entry["validation"])
    rng = np.random.default_rng(config.seed)
    rows = len(split.validation.keys)
    resamples = rng.integers(0, rows, size=(1000, rows))
    better: dict[str, Any] = {}
    for kind in MODELS[1:]:
        gain = validation_losses["mlp"] - validation_losses[kind]  # > 0: the sequence model's loss is lower
        means = gain[resamples].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        better[kind] = {
            "log_loss_gain": float(gain.mean()),
            "ci95": [float(low), float(high)],
            "better_than_mlp": bool(low > 0),
        }
    report["against_mlp_on_validation"] = better
    winners = [k for k in MODELS[1:] if better[k]["better_than_mlp"]]
    winner = max(winners, key=lambda k: better[k]["log_loss_gain"]) if winners else "mlp"
    report["winner_on_validation"] = winner
    report["ship_sequence_model"] = winner != "mlp"
    return report
