"""The seed network: structure and compile settings of SEED_MODEL.md, and its one-step algebra."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.network import (
    FAILURE_OUTPUT,
    LEARNING_RATE,
    LOSS_WEIGHTS,
    OUTPUT_NAMES,
    TSF_OUTPUT,
    TTF_OUTPUT,
    build_model,
)

pytestmark = pytest.mark.unit

N_FEATURES = 5


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_model(N_FEATURES)


def _layers(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if type(layer) is kind]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_layers_in_order_of_the_seed_table(model: keras.Model) -> None:
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "BatchNormalization", "LSTM", "Conv1D", "Conv1D", "Conv1D", "Flatten",
        "Dense", "Dense", "Dense", "Dense", "Dense",
    ]
    assert model.input_shape == (None, 1, N_FEATURES)


def test_lstm_settings(model: keras.Model) -> None:
    (lstm,) = _layers(model, keras.layers.LSTM)
    assert lstm.units == 128
    assert lstm.return_sequences is True


def test_conv_settings(model: keras.Model) -> None:
    convs = _layers(model, keras.layers.Conv1D)
    assert [conv.filters for conv in convs] == [128, 84, 64]
    for conv in convs:
        assert conv.kernel_size == (2,)
        assert conv.padding == "same"
        assert conv.activation is keras.activations.relu


def test_dense_stack_and_heads(model: keras.Model) -> None:
    dense = _layers(model, keras.layers.Dense)
    hidden, heads = dense[:2], dense[2:]
    assert [layer.units for layer in hidden] == [64, 32]
    assert all(layer.activation is keras.activations.relu for layer in hidden)
    assert tuple(model.output_names) == OUTPUT_NAMES
    activations = {layer.name: layer.activation for layer in heads}
    assert activations == {
        TTF_OUTPUT: keras.activations.relu,
        TSF_OUTPUT: keras.activations.linear,
        FAILURE_OUTPUT: keras.activations.sigmoid,
    }
    assert TTF_OUTPUT == "regressor"
    assert all(layer.units == 1 for layer in heads)
    assert [tuple(output.shape) for output in model.outputs] == [(None, 1)] * 3


def test_compile_settings(model: keras.Model) -> None:
    assert type(model.optimizer) is keras.optimizers.Nadam
    assert float(model.optimizer.learning_rate) == pytest.approx(0.008)
    assert LEARNING_RATE == 0.008
    assert model.loss == {
        TTF_OUTPUT: "mean_absolute_error",
        TSF_OUTPUT: "mean_absolute_error",
        FAILURE_OUTPUT: "binary_crossentropy",
    }
    assert LOSS_WEIGHTS == {TTF_OUTPUT: 8.0, TSF_OUTPUT: 1.0, FAILURE_OUTPUT: 1.0}


def test_total_loss_is_8_mae_ttf_plus_mae_tsf_plus_bce(model: keras.Model) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 1, N_FEATURES)).astype("float32")
    targets = {
        TTF_OUTPUT: rng.uniform(0, 10, (16, 1)).astype("float32"),
        TSF_OUTPUT: rng.uniform(0, 10, (16, 1)).astype("float32"),
        FAILURE_OUTPUT: (rng.uniform(size=(16, 1)) < 0.3).astype("float32"),
    }
    ttf, tsf, p = (np.asarray(out, dtype=np.float64) for out in model(x, training=False))
    p = np.clip(p, 1e-7, 1 - 1e-7)
    y = targets[FAILURE_OUTPUT]
    expected = (
        8 * np.mean(np.abs(ttf - targets[TTF_OUTPUT]))
        + np.mean(np.abs(tsf - targets[TSF_OUTPUT]))
        + np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    )
    results = model.evaluate(x, targets, batch_size=16, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(expected, rel=1e-4)


def test_rejects_no_features() -> None:
    with pytest.raises(ValueError, match="n_features"):
        build_model(0)


def test_kernel_2_same_conv_over_one_step_is_dense_with_kernel_0() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 1, 3)).astype("float32")
    conv = keras.layers.Conv1D(7, 2, activation="relu", padding="same")
    out = np.asarray(conv(x))
    kernel, bias = conv.get_weights()
    assert kernel.shape == (2, 3, 7)
    # "same" with an even kernel pads on the right: the one real step meets kernel[0].
    as_dense = np.maximum(x[:, 0] @ kernel[0] + bias, 0)
    np.testing.assert_allclose(out[:, 0], as_dense, rtol=1e-5, atol=1e-6)
    wrong_slice = np.maximum(x[:, 0] @ kernel[1] + bias, 0)
    assert not np.allclose(out[:, 0], wrong_slice, atol=1e-3)


def test_one_step_lstm_is_a_gated_dense_layer(model: keras.Model) -> None:
    (lstm,) = _layers(model, keras.layers.LSTM)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 1, N_FEATURES)).astype("float32")
    kernel, _recurrent, bias = lstm.get_weights()
    # Keras packs gates as [input, forget, cell, output]; with h0 = c0 = 0 the recurrent
    # kernel and the forget gate play no part.
    z = x[:, 0] @ kernel + bias
    i, _f, g, o = np.split(z, 4, axis=-1)
    expected = _sigmoid(o) * np.tanh(_sigmoid(i) * np.tanh(g))
    out = np.asarray(lstm(x))
    assert out.shape == (6, 1, 128)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-4, atol=1e-5)
