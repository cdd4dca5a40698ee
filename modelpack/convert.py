"""Converting a saved model to ONNX: ``modelpack convert URI --to onnx``.

The model's flavor exports the graph (``plugins.ExportsOnnx``: any flavor, built-in or not, that
implements ``export_onnx`` is convertible). The result is a new model directory holding the
source's files and an added ``onnx`` flavor, written through ``save_with`` only when ONNX
Runtime reproduces the source flavor's outputs, within the given tolerances, on the input
example and on rows generated from it (the parity gate).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack import _parity, plugins
from modelpack.descriptor import Descriptor
from modelpack.errors import ConversionError, ModelpackError, PluginError
from modelpack.model import Model, load, save_with
from modelpack.plugins import ExportsOnnx, Flavor, Wraps
from modelpack.signature import Signature
from modelpack.trust import TrustArg, legacy
from modelpack.uris import resolve

PARITY_ROWS = 1000
ONNX = "onnx"


@dataclass(frozen=True)
class OnnxExport:
    """What ``ExportsOnnx.export_onnx`` may return instead of the bare ``onnx.ModelProto``.

    ``ties(data)``: for one batch of parity inputs, a boolean array with one value per row,
    true where the source's answer is itself undecided (a classifier's two likeliest classes
    tie exactly), so that ONNX Runtime may answer either label there; None: no such row.
    """

    model: Any
    ties: Callable[[Any], Any] | None = None


def to_onnx(
    uri: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    opset: int | None = None,
    rows: int = PARITY_ROWS,
    overwrite: bool = False,
    trust: TrustArg = None,
    trust_pickle: bool | None = None,
) -> Path:
    """Write a copy of the model at ``uri`` with an added ``onnx`` flavor, parity-checked.

    ``output`` defaults to ``<source>-onnx`` beside a local source; a registry or remote URI
    needs one. The loader stays the source flavor: ``modelpack.load(out)`` answers exactly as
    before, ``modelpack.load(out, flavor="onnx")`` runs ONNX Runtime.
    """
    text = os.fspath(uri)
    if output is None and ("://" in text or text.startswith(("models:", "runs:"))):
        raise ConversionError(f"give an output directory (-o OUT) to convert {text}")
    source = resolve(Path(text) if isinstance(uri, os.PathLike) else text)
    target = Path(output) if output is not None else source.parent / f"{source.name}-onnx"
    descriptor = Descriptor.read(source)
    if ONNX in descriptor.flavors:
        raise ConversionError(f"{text} already has an onnx flavor")
    exporter = _exporter(descriptor.loader)  # refused before anything is loaded
    model = load(source, trust=legacy(trust, trust_pickle))
    signature = model.signature
    if signature is None:
        raise ConversionError(
            f"{text} has no signature, so its input types are unknown; save it with an "
            "input_example or a signature"
        )
    inputs = _parity.parity_inputs(signature, model.input_example(), rows=rows)
    original = _failing_as(model.predictor.predict, f"{text} failed on the parity gate's rows")
    exported = _export(exporter, model, signature, inputs[-1], opset)
    onnx_flavor = plugins.flavor(ONNX)
    run = _onnx_runner(onnx_flavor, exported.model, text)
    graph_outputs = [o.name for o in exported.model.graph.output]
    _align_shapes(exported.model, original(inputs[0]), graph_outputs, run(inputs[0]))
    diffs = _parity.check(
        original,
        _onnx_runner(onnx_flavor, exported.model, text),  # the graph as reshaped
        inputs,
        graph_outputs,
        rtol=rtol,
        atol=atol,
        what=f"the ONNX conversion of {text}",
        ties=exported.ties,
    )
    parity = {"rtol": rtol, "atol": atol, "inputs": len(inputs), "outputs": diffs}
    return save_with(
        onnx_flavor,
        exported.model,
        target,
        overwrite=overwrite,
        parent=parent_info(text, descriptor),
        base=model,
        conversion={
            "converted_from": descriptor.loader,
            "converter": _converter(exported.model, descriptor.loader),
            "parity": parity,
        },
    )


def convertible() -> list[str]:
    """The installed flavors that export ONNX."""
    found = []
    for name in plugins.names("flavor"):
        try:
            if isinstance(plugins.flavor(name), ExportsOnnx):
                found.append(name)
        except PluginError:  # a broken plugin converts nothing, and must not stop the others
            continue
    return found


def _exporter(name: str) -> ExportsOnnx:
    flavor: Flavor = plugins.flavor(name)
    if not isinstance(flavor, ExportsOnnx):
        raise ConversionError(
            f"cannot convert a {name} model to ONNX: the {name} flavor has no export_onnx "
            f"(convertible: {', '.join(convertible()) or 'no installed flavor'})"
        )
    return flavor


def _export(
    exporter: ExportsOnnx, model: Model, signature: Signature, sample: Any, opset: int | None
) -> OnnxExport:
    name = model.descriptor.loader
    options: dict[str, Any] = {}
    if opset is not None:
        if not _takes(exporter.export_onnx, "opset"):
            raise ConversionError(f"the {name} flavor's ONNX exporter takes no opset")
        options["opset"] = opset
    config = model.descriptor.flavors[name]
    export = _failing_as(
        lambda data: exporter.export_onnx(model.unwrap(), config, signature, data, **options),
        f"the {name} flavor's ONNX export failed",
    )
    exported = export(sample)
    if not isinstance(exported, OnnxExport):
        exported = OnnxExport(exported)
    onnx = sys.modules.get("onnx")  # imported by whatever built a ModelProto
    if onnx is None or not isinstance(exported.model, onnx.ModelProto):
        raise ConversionError(
            f"the {name} flavor's export_onnx returned a {type(exported.model).__name__}, "
            "not an onnx.ModelProto"
        )
    return exported


def _takes(method: Callable[..., Any], keyword: str) -> bool:
    params = inspect.signature(method).parameters.values()
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def _converter(proto: Any, flavor: str) -> dict[str, str]:
    return {"tool": proto.producer_name or f"{flavor} flavor", "version": proto.producer_version}


def _onnx_runner(onnx_flavor: Flavor, proto: Any, uri: str) -> Callable[[Any], Any]:
    """ONNX Runtime on ``proto`` as the onnx flavor runs it, failing as ``conversion_failed``."""
    if not isinstance(onnx_flavor, Wraps):
        raise ConversionError("the installed onnx flavor cannot run a graph it has not saved")
    predictor = _failing_as(lambda p: onnx_flavor.wrap(p, {}), "ONNX Runtime refused")(proto)
    return _failing_as(predictor.predict, f"ONNX Runtime failed on the conversion of {uri}")


def _failing_as(predict: Callable[[Any], Any], what: str) -> Callable[[Any], Any]:
    """``predict``, whose failures are a one-line ``conversion_failed`` naming the step."""

    def guarded(data: Any) -> Any:
        try:
            return predict(data)
        except ModelpackError:
            raise
        except Exception as exc:
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise ConversionError(f"{what}: {type(exc).__name__}: {reason}") from exc

    return guarded


def _align_shapes(proto: Any, produced: Any, names: list[str], ran: Any) -> None:
    from modelpack._onnx_graph import match_output_shapes

    match_output_shapes(proto, _parity.as_outputs(produced, names), _parity.as_outputs(ran, names))


def parent_info(uri: str, descriptor: Descriptor) -> dict[str, Any]:
    """What the converted model records of its source: id, URI, and registry name/version."""
    parent: dict[str, Any] = {
        "model_id": descriptor.model_id,
        "uri": uri,
        "flavor": descriptor.loader,
        "relation": "converted_to_onnx",
    }
    if uri.startswith("models:"):
        parent.update(_registry_version(uri))
    return parent


def _registry_version(uri: str) -> dict[str, Any]:
    from modelpack import registry

    rest = uri.removeprefix("models:").lstrip("/")
    name, _, tail = rest.partition("/")
    if not tail and "@" in name:
        name, alias = name.rsplit("@", 1)
        return {"registered_model": name, "version": registry.get_by_alias(name, alias).version}
    if tail == "latest":
        return {"registered_model": name, "version": registry.latest_version(name).version}
    if tail.isdigit():
        return {"registered_model": name, "version": int(tail)}
    return {"registered_model": name}


__all__ = ["PARITY_ROWS", "OnnxExport", "convertible", "parent_info", "to_onnx"]
