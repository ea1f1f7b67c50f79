"""``keras.applications`` architectures as one graph node (a backbone).

    - {name: backbone, application: {MobileNetV2: {include_top: false, pooling: avg}},
       inputs: image}

The architecture is built for the shape of the tensor it is applied to. Weights default to
``null`` (random initialisation): kexp never downloads anything behind the user's back, and
a machine without internet could not. ``weights: imagenet`` still works where Keras can
fetch (or has cached) the file.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from kexp.config.schema.common import spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, nearest
from kexp.tf import keras


@functools.lru_cache(maxsize=None)
def architectures() -> dict[str, Any]:
    """Every model-building function ``keras.applications`` exports (``ResNet50``, ...)."""
    return {
        name: obj
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(obj := getattr(keras.applications, name))
    }


def make_application(spec: Any, input_shape: tuple, name: str, path: KeyPath) -> Any:
    """The architecture ``spec`` names, for inputs of ``input_shape``, as a model ``name``."""
    arch, kwargs = spec_parts(spec)
    known = architectures()
    if arch not in known:
        raise ConfigError.single(
            path, f"unknown keras.applications architecture '{arch}'",
            suggestion=nearest(arch, known),
        )
    fn = known[arch]
    params = inspect.signature(fn).parameters
    bad = [k for k in kwargs if k not in params or k == "input_tensor"]
    if bad:
        raise ConfigError([
            ConfigIssue(
                path + (arch, key),
                f"{arch} takes no argument '{key}'" if key != "input_tensor" else
                "input_tensor is the node's input; give it under inputs:",
                suggestion=nearest(key, [p for p in params if p != "input_tensor"])
                if key != "input_tensor" else None,
            )
            for key in bad
        ])
    arguments = {"weights": None, "input_shape": input_shape, **kwargs}
    if "name" in params and "name" not in kwargs:
        arguments["name"] = name
    try:
        return fn(**arguments)
    except Exception as exc:  # shape limits, bad weights, a failed download: all user-facing
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError.single(
            path + (arch,), f"{arch} (for inputs of shape {input_shape}) failed: {first}"
        ) from exc
