"""The Keras network of SEED_MODEL.md: one feature vector in, TTF, TSF and P(failure) out.

The architecture is the LANL-competition winners' network, reproduced layer for layer.
Its input is one time step, so the LSTM acts as a gated dense layer and each kernel-2
"same" Conv1D sees one real position (Keras pads on the right, so only ``kernel[0]``
touches data); it is kept as given because it is what the user asked for and what won.

Example:
    >>> from model.network import build_model, OUTPUT_NAMES
    >>> model = build_model(n_features=6)
    >>> model.input_shape
    (None, 1, 6)
    >>> tuple(model.output_names) == OUTPUT_NAMES
    True
"""

from __future__ import annotations

import keras

TTF_OUTPUT = "regressor"
TSF_OUTPUT = "time_since_failure"
FAILURE_OUTPUT = "classifier"
OUTPUT_NAMES: tuple[str, ...] = (TTF_OUTPUT, TSF_OUTPUT, FAILURE_OUTPUT)

FAILURE_HORIZON_S = 0.5
"""The classifier head predicts P(TTF < FAILURE_HORIZON_S); its training target uses it too."""

LEARNING_RATE = 0.008
# TTF is the quantity that matters; TSF and the binary target only regularise.
LOSSES: dict[str, str] = {
    TTF_OUTPUT: "mean_absolute_error",
    TSF_OUTPUT: "mean_absolute_error",
    FAILURE_OUTPUT: "binary_crossentropy",
}
LOSS_WEIGHTS: dict[str, float] = {TTF_OUTPUT: 8.0, TSF_OUTPUT: 1.0, FAILURE_OUTPUT: 1.0}

LSTM_UNITS = 128
CONV_FILTERS: tuple[int, ...] = (128, 84, 64)
CONV_KERNEL_SIZE = 2
DENSE_UNITS: tuple[int, ...] = (64, 32)


def build_model(n_features: int) -> keras.Model:
    """Build and compile the seed network for feature vectors of length ``n_features``.

    Args:
        n_features: number of features per window (``len(model.features.FEATURE_NAMES)``).

    Returns:
        A compiled functional ``keras.Model`` taking ``(batch, 1, n_features)`` float32 and
        returning a list of three ``(batch, 1)`` tensors in ``OUTPUT_NAMES`` order: time to
        failure (ReLU), time since failure (linear), P(TTF < FAILURE_HORIZON_S) (sigmoid).

    Example:
        >>> import numpy as np
        >>> model = build_model(4)
        >>> ttf, tsf, p_failure = model(np.zeros((2, 1, 4), "float32"), training=False)
        >>> tuple(ttf.shape)
        (2, 1)
    """
    if n_features < 1:
        raise ValueError(f"n_features must be at least 1, got {n_features}")
    inputs = keras.Input(shape=(1, n_features), name="features")
    hidden = keras.layers.BatchNormalization()(inputs)
    hidden = keras.layers.LSTM(LSTM_UNITS, return_sequences=True)(hidden)
    for filters in CONV_FILTERS:
        hidden = keras.layers.Conv1D(
            filters, CONV_KERNEL_SIZE, activation="relu", padding="same"
        )(hidden)
    hidden = keras.layers.Flatten()(hidden)
    for units in DENSE_UNITS:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    outputs = [
        keras.layers.Dense(1, activation="relu", name=TTF_OUTPUT)(hidden),
        keras.layers.Dense(1, name=TSF_OUTPUT)(hidden),
        keras.layers.Dense(1, activation="sigmoid", name=FAILURE_OUTPUT)(hidden),
    ]
    model = keras.Model(inputs=inputs, outputs=outputs, name="labquake_seed")
    model.compile(
        optimizer=keras.optimizers.Nadam(learning_rate=LEARNING_RATE),
        loss=LOSSES,
        loss_weights=LOSS_WEIGHTS,
    )
    return model
