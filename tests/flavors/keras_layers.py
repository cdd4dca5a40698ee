"""Custom Keras objects for tests/flavors/test_keras.py: a load must import them from here."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # this environment has no TensorFlow

import keras


@keras.saving.register_keras_serializable(package="modelpack_tests")
class Scale(keras.layers.Layer):
    """Multiplies its input by a constant factor (kept in the config)."""

    def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs: Any) -> Any:
        return inputs * self.factor

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


def double_relu(x: Any) -> Any:
    return keras.ops.relu(x) * 2.0


keras.saving.register_keras_serializable(package="modelpack_tests")(double_relu)
