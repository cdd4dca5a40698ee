"""Exporters from a loaded source model to an ``onnx.ModelProto`` (skl2onnx, torch.onnx).

Each returns a graph whose outputs are those of the source flavor's predictor: the same names
and shapes, so ``load(out, flavor="onnx").predict`` answers like ``load(out).predict``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack._onnx_graph import concat_columns, fresh_name, keep_outputs
from modelpack.errors import ConversionError
from modelpack.signature import ColSpec, Signature

if TYPE_CHECKING:
    import onnx


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Exporters print progress and warn about their own internals: nothing a user can act on.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# -- scikit-learn ------------------------------------------------------------------------------

_SKLEARN_OUTPUTS = {"predict": "label", "predict_proba": "probabilities"}


def sklearn_to_onnx(
    estimator: Any, signature: Signature, predict_method: str, opset: int | None
) -> onnx.ModelProto:
    from sklearn.base import is_classifier

    classifier = is_classifier(estimator)
    if predict_method not in ("predict", "predict_proba", "transform"):
        raise ConversionError(f"cannot convert predict_method={predict_method!r} to ONNX")
    options = {"zipmap": False} if classifier else None
    if signature.inputs.is_tensor:
        model = _skl2onnx(
            estimator, lambda double: _tensor_types(signature, double), options, opset
        )
    else:
        model = _columns_to_onnx(estimator, signature.inputs.columns, options, opset)
    if classifier and predict_method in _SKLEARN_OUTPUTS:
        keep_outputs(model, [_SKLEARN_OUTPUTS[predict_method]])
    return model


def _skl2onnx(
    estimator: Any,
    initial_types: Callable[[bool], list[tuple[str, Any]]],
    options: dict[str, Any] | None,
    opset: int | None,
    doubles: tuple[bool, ...] = (True, False),
) -> onnx.ModelProto:
    from modelpack.flavors.onnx import OnnxFlavor

    errors = []
    # float64 first: the same arithmetic as scikit-learn; float32 where a converter has no double.
    # A classifier without probabilities (LinearSVC) takes no zipmap option: then none at all.
    tries = [(options, d) for d in doubles] + ([(None, d) for d in doubles] if options else [])
    for options, double in tries:
        try:
            with _quiet():
                from skl2onnx import to_onnx

                model = to_onnx(
                    estimator,
                    initial_types=initial_types(double),
                    options=options,
                    target_opset=opset,
                )
                # Some converters write double graphs ONNX Runtime refuses (tree ensembles whose
                # ai.onnx.ml opset has no double): those take the float32 way too.
                OnnxFlavor().wrap(model, {})
                return model
        except ConversionError:
            raise
        except Exception as exc:
            errors.append(_first_line(exc))
    raise ConversionError(
        f"skl2onnx cannot convert {type(estimator).__name__}: {errors[-1]}", errors=errors
    )


def _tensor_types(signature: Signature, double: bool) -> list[tuple[str, Any]]:
    if len(signature.inputs.tensors) != 1:
        raise ConversionError("a scikit-learn model takes one input tensor")
    spec = signature.inputs.tensors[0]
    shape = [None, *(d if d > 0 else None for d in spec.shape[1:])]
    return [(spec.name or "X", _skl_type(spec.dtype, shape, double, spec.name or "X"))]


def _columns_to_onnx(
    estimator: Any, columns: Sequence[ColSpec], options: dict[str, Any] | None, opset: int | None
) -> onnx.ModelProto:
    # Either way the graph takes one (n, 1) input per column. skl2onnx routes them by name into
    # a ColumnTransformer (or encoder), but other estimators want the one (n, k) matrix they were
    # fitted on: those convert from a matrix, built by a Concat in front. The first step decides,
    # as inside skl2onnx's ColumnTransformer parser; the other way is tried when that fails, so
    # what converted per column before (a search over a pipeline, a custom converter) still does.
    def per_column() -> onnx.ModelProto:
        return _skl2onnx(
            estimator,
            lambda double: [
                (c.name, _skl_type(c.dtype, [None, 1], double, c.name)) for c in columns
            ],
            options,
            opset,
        )

    def matrix() -> onnx.ModelProto:
        return _matrix_to_onnx(estimator, columns, options, opset)

    ways = (per_column, matrix) if _takes_columns(estimator) else (matrix, per_column)
    failures = []
    for way in ways:
        try:
            return way()
        except ConversionError as exc:
            failures.append(exc)
    raise failures[0]


def _first_step(estimator: Any) -> Any:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps if s is not None and s != "passthrough"]
        return _first_step(steps[0]) if steps else estimator
    return estimator


def _takes_columns(estimator: Any) -> bool:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    # skl2onnx's `do_not_merge_columns`: the estimators it gives several inputs as they are.
    return isinstance(_first_step(estimator), (ColumnTransformer, OneHotEncoder, OrdinalEncoder))


def _matrix_to_onnx(
    estimator: Any, columns: Sequence[ColSpec], options: dict[str, Any] | None, opset: int | None
) -> onnx.ModelProto:
    from skl2onnx.common.data_types import StringTensorType

    specs = {c.name: c for c in columns}
    order = _fitted_order(estimator, list(specs))
    column_types = [(c.name, _skl_type(c.dtype, [None, 1], True, c.name)) for c in columns]
    for name, t in column_types:
        if name in order and isinstance(t, StringTensorType):
            raise ConversionError(
                f"column {name!r} holds strings, but {type(_first_step(estimator)).__name__} "
                "takes one numeric matrix: encode it in the model (a ColumnTransformer with a "
                "OneHotEncoder) to convert it"
            )
    # The matrix scikit-learn computes on: the frame's values, float32 only where numpy makes
    # them float32 (float32 columns, with small ints at most); ints and bools become float64.
    values = np.result_type(*(np.dtype(specs[n].dtype) for n in order))
    wide = values.kind != "f" or values.itemsize >= 8
    name = fresh_name("features", set(specs))
    model = _skl2onnx(
        estimator,
        lambda double: [(name, _skl_type("float64", [None, len(order)], double, name))],
        options,
        opset,
        doubles=(True, False) if wide else (False,),
    )
    concat_columns(model, name, [(n, t.to_onnx_type()) for n, t in column_types], order)
    return model


def _fitted_order(estimator: Any, names: list[str]) -> list[str]:
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None:
        count = getattr(estimator, "n_features_in_", len(names))
        if count != len(names):
            raise ConversionError(
                f"{type(estimator).__name__} was fitted on {count} features, the signature has "
                f"{len(names)} columns"
            )
        return names
    order = [str(f) for f in fitted]
    missing = [f for f in order if f not in names]
    if missing:
        raise ConversionError(
            f"{type(estimator).__name__} was fitted on columns the signature lacks: {missing}"
        )
    return order


def _skl_type(dtype: str, shape: list[int | None], double: bool, name: str) -> Any:
    from skl2onnx.common import data_types as t

    if dtype.startswith("float"):
        return (
            t.DoubleTensorType(shape) if double and dtype == "float64" else t.FloatTensorType(shape)
        )
    if dtype.startswith(("int", "uint")):
        return t.Int64TensorType(shape)
    if dtype in ("string", "object", "str"):
        return t.StringTensorType(shape)
    if dtype == "bool":
        return t.BooleanTensorType(shape)
    raise ConversionError(f"input {name!r} of type {dtype} has no ONNX equivalent in skl2onnx")


# -- torch --------------------------------------------------------------------------------------


def torch_to_onnx(
    module: Any, signature: Signature, sample: Any, outputs: list[str], opset: int | None
) -> onnx.ModelProto:
    import torch

    specs = signature.inputs.tensors
    if not specs:
        raise ConversionError("a torch model converts from a tensor signature, not columns")
    names = [s.name or f"input_{i}" for i, s in enumerate(specs)]
    first = next((p for p in module.parameters() if p.is_floating_point()), None)

    def tensor(value: Any) -> torch.Tensor:
        t = torch.from_numpy(np.array(value))
        return t.to(first.dtype) if first is not None and t.is_floating_point() else t

    as_kwargs = isinstance(sample, Mapping)
    feeds = {n: tensor(sample[n]) for n in names} if as_kwargs else {names[0]: tensor(sample)}
    args = () if as_kwargs else (feeds[names[0]],)
    kwargs = feeds if as_kwargs else {}
    batch = torch.export.Dim.DYNAMIC
    dynamic: Any = {n: {0: batch} for n in names} if as_kwargs else ({0: batch},)
    with contextlib.suppress(NotImplementedError):  # an exported program's module: no eval()
        module = module.eval()
    try:
        with _quiet():
            program = torch.onnx.export(
                module,
                args,
                kwargs=kwargs,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=None if as_kwargs else names,
                output_names=outputs,
                opset_version=opset,
                verbose=False,
            )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        model = program.model_proto
    except Exception as exc:
        model = _torchscript_export(
            module, args or tuple(feeds.values()), names, outputs, opset, exc
        )
    if len(model.graph.output) != len(outputs):
        raise ConversionError(
            f"the exported graph has {len(model.graph.output)} outputs, the module returns "
            f"{len(outputs)}; nested outputs are not supported"
        )
    return model


def _torchscript_export(
    module: Any,
    args: tuple[Any, ...],
    names: list[str],
    outputs: list[str],
    opset: int | None,
    first: BaseException,
) -> onnx.ModelProto:
    import onnx
    import torch

    try:
        with _quiet(), tempfile.TemporaryDirectory(prefix="modelpack-export-") as tmp:
            file = Path(tmp) / "model.onnx"
            torch.onnx.export(
                module,
                args,
                file,
                dynamo=False,
                input_names=names,
                output_names=outputs,
                dynamic_axes={n: {0: "batch"} for n in [*names, *outputs]},
                opset_version=opset or 17,
            )
            return onnx.load(str(file))
    except Exception as exc:
        raise ConversionError(
            f"torch.onnx cannot export {type(module).__name__}: {_first_line(first)} "
            f"(the TorchScript exporter also failed: {_first_line(exc)})"
        ) from exc
