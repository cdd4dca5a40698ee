"""What the XGBoost and LightGBM flavors share: type checks by name, labels and categories as
plain data, and rebuilding the input frame a booster was trained on."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from modelpack.errors import InvalidModelError

PREDICT_METHODS = ("predict", "predict_proba", "predict_raw")


def class_of(obj: Any, library: str, names: Collection[str]) -> str | None:
    """The class name of ``obj`` when it is exactly one of ``library``'s ``names``.

    Told by the type's module and name, so that ``accepts`` never imports the library; a
    subclass is not accepted (its own methods would be lost at load).
    """
    cls = type(obj)
    module = getattr(cls, "__module__", "") or ""
    if module.partition(".")[0] != library or cls.__name__ not in names:
        return None
    return cls.__name__


def check_method(method: str, allowed: Sequence[str], what: str) -> str:
    if method not in allowed:
        raise InvalidModelError(
            f"a {what} cannot predict with {method!r}; pass predict_method= one of "
            f"{', '.join(map(repr, allowed))}"
        )
    return method


def plain_labels(classes: Any) -> list[Any]:
    """Class labels as YAML-safe ints or strings; anything else is refused."""
    labels = np.asarray(classes).tolist()
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise InvalidModelError(
                f"class label {label!r} ({type(label).__name__}) cannot be stored without "
                "pickle; fit the model with integer or string labels"
            )
    return list(labels)


def plain_categories(values: Any) -> list[Any]:
    """A column's categories as plain data (ints, floats or strings)."""
    cats = list(np.asarray(values).tolist())
    for value in cats:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidModelError(
                f"category {value!r} ({type(value).__name__}) cannot be stored without "
                "pickle; use integer or string categories"
            )
    return cats


def as_frame(
    data: Any, categories: Mapping[str, Sequence[Any]], feature_names: Sequence[str] | None
) -> Any:
    """``data`` with each categorical column rebuilt with its training categories (in their
    order, so codes match training), whatever form the values arrive in (strings, a Categorical
    with other categories); arrays become frames only where categories need names."""
    if not categories:
        return data
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(np.asarray(data), columns=list(feature_names or ()))
    else:
        data = data.copy(deep=False)
    for name, cats in categories.items():
        if name in data.columns:
            column = data[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                column = column.astype(object)
            data[name] = pd.Categorical(column, categories=list(cats))
    return data


def installed_distribution(*candidates: str) -> str:
    """The first of ``candidates`` that is installed (e.g. ``xgboost`` or ``xgboost-cpu``, which
    provide the same module), else the first."""
    for name in candidates:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return candidates[0]
