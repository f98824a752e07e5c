"""Objects that look like Keras layers to convjit.from_keras (class name,
get_config(), get_weights()), with Keras' config keys and weight layouts,
for tests and examples without TensorFlow."""

import numpy as np


class _Layer:
    def __init__(self, name, weights, input_shape=None, **config):
        self._config = {"name": name, "data_format": "channels_last", **config}
        self._weights = weights
        if input_shape is not None:
            self._build = {"input_shape": (None, *input_shape)}
        else:
            self._build = None

    def get_config(self):
        return dict(self._config)

    def get_weights(self):
        return list(self._weights)

    def get_build_config(self):
        if self._build is None:
            raise AttributeError("not built")
        return self._build


def _conv_config(kernel_size, strides, padding, dilation_rate, activation, use_bias):
    return dict(
        kernel_size=tuple(kernel_size),
        strides=tuple(strides),
        padding=padding,
        dilation_rate=tuple(dilation_rate),
        activation=activation,
        use_bias=use_bias,
    )


class Conv2D(_Layer):
    def __init__(self, filters, kernel_size, cin, rng, strides=(1, 1), padding="valid", dilation_rate=(1, 1),
                 groups=1, activation="linear", use_bias=True, name="conv2d", input_shape=None):
        kh, kw = kernel_size
        w = [rng.standard_normal((kh, kw, cin // groups, filters)).astype(np.float32) / np.sqrt(kh * kw * cin)]
        if use_bias:
            w.append(rng.standard_normal(filters).astype(np.float32) * 0.1)
        super().__init__(name, w, input_shape, filters=filters, groups=groups,
                         **_conv_config(kernel_size, strides, padding, dilation_rate, activation, use_bias))


class DepthwiseConv2D(_Layer):
    def __init__(self, kernel_size, cin, rng, depth_multiplier=1, strides=(1, 1), padding="valid",
                 dilation_rate=(1, 1), activation="linear", use_bias=True, name="depthwise_conv2d", input_shape=None):
        kh, kw = kernel_size
        w = [rng.standard_normal((kh, kw, cin, depth_multiplier)).astype(np.float32) / np.sqrt(kh * kw)]
        if use_bias:
            w.append(rng.standard_normal(cin * depth_multiplier).astype(np.float32) * 0.1)
        super().__init__(name, w, input_shape, depth_multiplier=depth_multiplier,
                         **_conv_config(kernel_size, strides, padding, dilation_rate, activation, use_bias))


class SeparableConv2D(_Layer):
    def __init__(self, filters, kernel_size, cin, rng, depth_multiplier=1, strides=(1, 1), padding="valid",
                 dilation_rate=(1, 1), activation="linear", use_bias=True, name="separable_conv2d", input_shape=None):
        kh, kw = kernel_size
        w = [
            rng.standard_normal((kh, kw, cin, depth_multiplier)).astype(np.float32) / np.sqrt(kh * kw),
            rng.standard_normal((1, 1, cin * depth_multiplier, filters)).astype(np.float32)
            / np.sqrt(cin * depth_multiplier),
        ]
        if use_bias:
            w.append(rng.standard_normal(filters).astype(np.float32) * 0.1)
        super().__init__(name, w, input_shape, filters=filters, depth_multiplier=depth_multiplier,
                         **_conv_config(kernel_size, strides, padding, dilation_rate, activation, use_bias))


class ReLU(_Layer):
    def __init__(self, max_value=None, name="re_lu"):
        super().__init__(name, [], None, max_value=max_value, negative_slope=0.0, threshold=0.0)


class Activation(_Layer):
    def __init__(self, activation, name="activation"):
        super().__init__(name, [], None, activation=activation)


class InputLayer(_Layer):
    def __init__(self, shape, name="input_layer"):
        super().__init__(name, [], None, batch_shape=(None, *shape))


class Sequential:
    def __init__(self, layers, name="sequential"):
        self.layers = [l for l in layers if type(l).__name__ != "InputLayer"]
        self._all = layers
        self._name = name

    def get_config(self):
        return {"name": self._name, "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in self._all]}
