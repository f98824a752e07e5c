"""convjit.from_keras on duck-typed Keras layers (tests/fake_keras.py:
Keras' class names, config keys and weight layouts), checked against a
NumPy reference of Keras' semantics (tests/reference.py); with real Keras
too where it is installed."""

import numpy as np
import pytest

import convjit
import fake_keras as K
import reference as ref


def run(layer, x):
    return convjit.compile(layer)(x)


def test_separable_conv2d_with_depth_multiplier_2(rng):
    sep = K.SeparableConv2D(256, (5, 5), 3, rng, depth_multiplier=2, input_shape=(12, 12, 3), activation="relu")
    layer = convjit.from_keras(sep)
    assert layer.input_shape == (12, 12, 3) and layer.output_shape == (8, 8, 256)
    assert "separable depthwise, multiplier 2" in layer.conv
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    dw, pw, b = sep.get_weights()
    want = ref.activation(ref.conv2d(ref.depthwise(x, dw), pw) + b, "relu")
    np.testing.assert_allclose(run(layer, x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_depthwise_conv2d(rng, padding, strides):
    d = K.DepthwiseConv2D((3, 3), 8, rng, depth_multiplier=3, strides=strides, padding=padding, input_shape=(11, 10, 8))
    layer = convjit.from_keras(d)
    x = rng.standard_normal((2, 11, 10, 8)).astype(np.float32)
    w, b = d.get_weights()
    want = ref.depthwise(x, w, strides, padding=padding) + b
    np.testing.assert_allclose(run(layer, x), want, rtol=1e-4, atol=1e-4)


def test_conv2d_dilated_grouped_and_without_bias(rng):
    c = K.Conv2D(16, (3, 3), 8, rng, dilation_rate=(2, 2), groups=2, padding="same", use_bias=False, input_shape=(9, 9, 8))
    layer = convjit.from_keras(c)
    x = rng.standard_normal((1, 9, 9, 8)).astype(np.float32)
    want = ref.conv2d(x, c.get_weights()[0], dilation=(2, 2), padding="same", groups=2)
    np.testing.assert_allclose(run(layer, x), want, rtol=1e-4, atol=1e-4)


def test_sequential_with_activation_layers(rng):
    model = K.Sequential(
        [
            K.InputLayer((16, 16, 8)),
            K.Conv2D(32, (1, 1), 8, rng, name="expand"),
            K.ReLU(6.0),
            K.DepthwiseConv2D((3, 3), 32, rng, strides=(2, 2), padding="same", name="dw"),
            K.Activation("relu"),
            K.SeparableConv2D(12, (3, 3), 32, rng, padding="same", name="sep/x:0"),
        ],
        name="block",
    )
    layer = convjit.from_keras(model)
    assert layer.name == "block"
    assert layer.output_shape == (8, 8, 12)
    assert "sep_x_0" in layer.conv
    x = rng.standard_normal((2, 16, 16, 8)).astype(np.float32)
    (w1, b1), (w2, b2), (w3, w4, b4) = (l.get_weights() for l in model.layers if l.get_weights())
    y = ref.activation(ref.conv2d(x, w1) + b1, "relu6")
    y = ref.activation(ref.depthwise(y, w2, (2, 2), padding="same") + b2, "relu")
    y = ref.conv2d(ref.depthwise(y, w3, padding="same"), w4) + b4
    np.testing.assert_allclose(run(layer, x), y, rtol=1e-4, atol=1e-4)
    # A list of layers is a Sequential too.
    listed = convjit.from_keras(model.layers, input_shape=(16, 16, 8), name="block")
    assert listed.conv == layer.conv


def test_what_has_no_conv_equivalent_is_refused(rng):
    with pytest.raises(convjit.LayerError, match="activation 'tanh'"):
        convjit.from_keras(K.Conv2D(4, (3, 3), 3, rng, activation="tanh", input_shape=(8, 8, 3)))
    with pytest.raises(convjit.LayerError, match="padding 'causal'"):
        convjit.from_keras(K.Conv2D(4, (3, 3), 3, rng, padding="causal", input_shape=(8, 8, 3)))
    with pytest.raises(convjit.LayerError, match="not a convolution"):
        convjit.from_keras([K.Conv2D(4, (3, 3), 3, rng), type("Dense", (K._Layer,), {})("dense", [], None)], input_shape=(8, 8, 3))
    with pytest.raises(convjit.LayerError, match="max_value"):
        convjit.from_keras([K.Conv2D(4, (3, 3), 3, rng), K.ReLU(4.0)], input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="input_shape"):
        convjit.from_keras(K.Conv2D(4, (3, 3), 3, rng))
    # A shape the layer cannot take is the library's LayerError on the generated text.
    with pytest.raises(convjit.LayerError):
        convjit.from_keras(K.Conv2D(4, (5, 5), 3, rng), input_shape=(2, 2, 3))


def test_real_keras_where_installed(rng):
    keras = pytest.importorskip("keras", reason="Keras not installed: the duck-typed layers above stand in for it")
    sep = keras.layers.SeparableConv2D(256, 5, depth_multiplier=2, activation="relu")
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    want = np.asarray(sep(x))
    np.testing.assert_allclose(run(convjit.from_keras(sep), x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "key, value",
    [
        ("kernel_size", (3.9, 3.2)),
        ("kernel_size", "33"),
        ("kernel_size", True),
        ("kernel_size", None),
        ("kernel_size", (3, 3, 3)),
        ("kernel_size", (-3, 3)),
        ("strides", (2.5, 2.5)),
        ("strides", 0),
        ("dilation_rate", "ab"),
        ("filters", 8.7),
        ("filters", "eight"),
        ("groups", 0),
        ("groups", None),
        ("use_bias", "False"),
        ("use_bias", 1),
    ],
)
def test_odd_config_values_are_refused_by_name(rng, key, value):
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4), name="conv1")
    layer._config[key] = value
    with pytest.raises(convjit.LayerError, match=f"Keras layer 'conv1' \\(Conv2D\\): {key} must be"):
        convjit.from_keras(layer)


def test_missing_config_keys_and_odd_objects_are_layer_errors(rng):
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4), name="conv1")
    del layer._config["filters"]
    with pytest.raises(convjit.LayerError, match="'conv1' \\(Conv2D\\): get_config\\(\\) has no 'filters'"):
        convjit.from_keras(layer)
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4))
    layer.get_config = lambda: [1, 2]
    with pytest.raises(convjit.LayerError, match="get_config\\(\\) returned list"):
        convjit.from_keras(layer)
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4))
    layer.get_weights = lambda: None
    with pytest.raises(convjit.LayerError, match="get_weights\\(\\) returned NoneType"):
        convjit.from_keras(layer)
    layer.get_weights = lambda: ["a", "b"]
    with pytest.raises(convjit.LayerError, match="get_weights\\(\\)\\[0\\] has dtype <U1"):
        convjit.from_keras(layer)
    with pytest.raises(convjit.LayerError, match="max_value must be None or a number, got 'abc'"):
        convjit.from_keras([K.Conv2D(4, (3, 3), 3, rng), K.ReLU("abc")], input_shape=(8, 8, 3))
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4), activation={"class_name": 5, "config": None})
    with pytest.raises(convjit.LayerError, match="activation '5'"):
        convjit.from_keras(layer)
    for bad, error in (("884", TypeError), ((8.9, 8, 4), TypeError), ((8, 8), ValueError), ((0, 8, 4), ValueError)):
        with pytest.raises(error, match="input_shape"):
            convjit.from_keras(K.Conv2D(8, (3, 3), 4, rng), input_shape=bad)


def test_numpy_integers_and_lists_are_config_values(rng):
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4), strides=(2, 2), name="c")
    want = convjit.from_keras(layer).conv
    cfg = layer._config
    cfg.update(kernel_size=np.int64(3), strides=[np.int32(2), 2], filters=np.int64(8), use_bias=np.bool_(True))
    assert convjit.from_keras(layer, input_shape=np.array([8, 8, 4])).conv == want


def test_a_huge_weight_view_is_refused_by_shape(rng):
    # A view of 3.6e13 values: copied whole before the shape check, it
    # aborted the interpreter.
    layer = K.Conv2D(8, (3, 3), 4, rng, input_shape=(8, 8, 4), name="c")
    huge = np.broadcast_to(np.float32(1), (3, 3, 4, 10**12))
    layer._weights = [huge, np.ones(8, np.float32)]
    with pytest.raises(convjit.DataError, match=r"key 'c.weight': expected shape \[3, 3, 4, 8\] .* found \[3, 3, 4, 1000000000000\]"):
        convjit.compile(convjit.from_keras(layer))
