"""torch to ONNX (torch.onnx): what ``TorchFlavor.export_onnx`` runs.

The dynamo exporter (onnxscript) with a dynamic batch dimension on every input, and every other
dimension the signature leaves open (-1: a transformer's sequence length) dynamic too; the
TorchScript exporter with ``dynamic_axes`` only when that fails. The graph's outputs take the
names the torch flavor's predictor gives (``output``, ``output_0``..., or a dict's keys). See
docs/onnx.md.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.errors import ConversionError
from modelpack.flavors._onnx_export import first_line, quiet
from modelpack.signature import Signature

if TYPE_CHECKING:
    import onnx
    import torch


def export(
    module: Any, signature: Signature, sample: Any, produced: Any, opset: int | None
) -> onnx.ModelProto:
    """The graph of ``module``; ``produced``: what the flavor's predictor answers on ``sample``."""
    import torch

    outputs = list(produced) if isinstance(produced, Mapping) else ["output"]
    model = torch_to_onnx(module, signature, sample, outputs, opset)
    model.producer_name, model.producer_version = "torch.onnx", str(torch.__version__)
    return model


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
    open_dims = {n: _open_dims(spec.shape) for n, spec in zip(names, specs, strict=False)}
    axes = {n: dict.fromkeys(dims, torch.export.Dim.DYNAMIC) for n, dims in open_dims.items()}
    dynamic: Any = axes if as_kwargs else (axes[names[0]],)
    with contextlib.suppress(NotImplementedError):  # an exported program's module: no eval()
        module = module.eval()
    try:
        with quiet():
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
            module, args or tuple(feeds.values()), names, outputs, opset, exc, open_dims
        )
    if len(model.graph.output) != len(outputs):
        raise ConversionError(
            f"the exported graph has {len(model.graph.output)} outputs, the module returns "
            f"{len(outputs)}; nested outputs are not supported"
        )
    return model


def _open_dims(shape: tuple[int, ...]) -> list[int]:
    """The batch dimension, and every other dimension the signature leaves open (-1)."""
    return [0, *(i for i, size in enumerate(shape) if i > 0 and (size is None or size < 0))]


def _torchscript_export(
    module: Any,
    args: tuple[Any, ...],
    names: list[str],
    outputs: list[str],
    opset: int | None,
    first: BaseException,
    open_dims: Mapping[str, list[int]],
) -> onnx.ModelProto:
    import onnx
    import torch

    try:
        with quiet(), tempfile.TemporaryDirectory(prefix="modelpack-export-") as tmp:
            file = Path(tmp) / "model.onnx"
            torch.onnx.export(
                module,
                args,
                file,
                dynamo=False,
                input_names=names,
                output_names=outputs,
                dynamic_axes={
                    **{n: {0: "batch"} for n in outputs},
                    **{n: {d: f"{n}_{d}" if d else "batch" for d in open_dims[n]} for n in names},
                },
                opset_version=opset or 17,
            )
            return onnx.load(str(file))
    except Exception as exc:
        raise ConversionError(
            f"torch.onnx cannot export {type(module).__name__}: {first_line(first)} "
            f"(the TorchScript exporter also failed: {first_line(exc)})"
        ) from exc
