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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.errors import ConversionError
from modelpack.signature import Signature

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
    errors = []
    # float64 first: the same arithmetic as scikit-learn; float32 where a converter has no double.
    for double in (True, False):
        try:
            with _quiet():
                from skl2onnx import to_onnx

                model = to_onnx(
                    estimator,
                    initial_types=_initial_types(signature, double=double),
                    options=options,
                    target_opset=opset,
                )
            break
        except ConversionError:
            raise
        except Exception as exc:
            errors.append(_first_line(exc))
    else:
        raise ConversionError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {errors[-1]}", errors=errors
        )
    if classifier and predict_method in _SKLEARN_OUTPUTS:
        keep_outputs(model, [_SKLEARN_OUTPUTS[predict_method]])
    return model


def _initial_types(signature: Signature, *, double: bool) -> list[tuple[str, Any]]:
    if signature.inputs.is_tensor:
        if len(signature.inputs.tensors) != 1:
            raise ConversionError("a scikit-learn model takes one input tensor")
        spec = signature.inputs.tensors[0]
        shape = [None, *(d if d > 0 else None for d in spec.shape[1:])]
        return [(spec.name or "X", _skl_type(spec.dtype, shape, double, spec.name or "X"))]
    # One input per column: a ColumnTransformer routes each column by name.
    return [
        (c.name, _skl_type(c.dtype, [None, 1], double, c.name)) for c in signature.inputs.columns
    ]


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


# -- graph surgery ------------------------------------------------------------------------------


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    """Drop every graph output not in ``names`` (their nodes stay, unused, and ORT prunes them)."""
    kept = [o for o in model.graph.output if o.name in names]
    if len(kept) != len(names):
        found = [o.name for o in model.graph.output]
        raise ConversionError(f"the converted graph has outputs {found}, not {names}")
    del model.graph.output[:]
    model.graph.output.extend(kept)


def match_output_shapes(model: onnx.ModelProto, source: Mapping[str, np.ndarray]) -> None:
    """Reshape graph outputs of shape ``(n, 1)`` to ``(n,)`` where the source returns 1-D."""
    from onnx import helper, numpy_helper

    for output in model.graph.output:
        want = source.get(output.name)
        dims = output.type.tensor_type.shape.dim
        if want is None or want.ndim != 1 or len(dims) != 2 or dims[1].dim_value != 1:
            continue
        inner = f"{output.name}__column"
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                if name == output.name:
                    node.output[i] = inner
            for i, name in enumerate(node.input):
                if name == output.name:
                    node.input[i] = inner
        shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{output.name}__shape")
        model.graph.initializer.append(shape)
        model.graph.node.append(helper.make_node("Reshape", [inner, shape.name], [output.name]))
        del dims[1]
