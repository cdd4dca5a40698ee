"""Converting a saved model to ONNX: ``modelpack convert URI --to onnx``.

The result is a new model directory holding the source flavor and an added ``onnx`` flavor.
It is written only when ONNX Runtime reproduces the source flavor's outputs, within the given
tolerances, on the input example and on rows generated from it (the parity gate).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelpack import _parity
from modelpack._fs import atomic_directory
from modelpack.descriptor import Descriptor, build_manifest
from modelpack.environment import environment_info, pinned
from modelpack.errors import ConversionError, ModelpackError
from modelpack.model import MODEL_SUBDIR, load
from modelpack.trust import TrustArg, legacy
from modelpack.uris import resolve

CONVERTIBLE = ("sklearn", "torch")
PARITY_ROWS = 1000


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
    before, ``modelpack.load(out, flavor="onnx")`` (or ``modelpack.servers.onnxruntime``) runs
    ONNX Runtime.
    """
    text = os.fspath(uri)
    if output is None and ("://" in text or text.startswith(("models:", "runs:"))):
        raise ConversionError(f"give an output directory (-o OUT) to convert {text}")
    source = resolve(Path(text) if isinstance(uri, os.PathLike) else text)
    target = Path(output) if output is not None else source.parent / f"{source.name}-onnx"
    descriptor = Descriptor.read(source)
    flavor = descriptor.loader
    if "onnx" in descriptor.flavors:
        raise ConversionError(f"{text} already has an onnx flavor")
    if flavor not in CONVERTIBLE:
        raise ConversionError(
            f"cannot convert a {flavor} model to ONNX (convertible: {', '.join(CONVERTIBLE)})"
        )
    model = load(source, trust=legacy(trust, trust_pickle))
    if model.signature is None:
        raise ConversionError(
            f"{text} has no signature, so its input types are unknown; save it with an "
            "input_example or a signature"
        )
    inputs = _parity.parity_inputs(model.signature, model.input_example(), rows=rows)
    original = _failing_as(model.predictor.predict, f"{text} failed on the parity gate's rows")
    proto, converter = _export(flavor, model, inputs[-1], opset, original)
    graph_outputs = [o.name for o in proto.graph.output]
    _align_shapes(proto, original(inputs[0]), graph_outputs, inputs[0])

    from modelpack.flavors.onnx import OnnxFlavor

    onnx_flavor = OnnxFlavor()
    session = onnx_flavor.wrap(proto, {})
    diffs = _parity.check(
        original,
        _failing_as(session.predict, f"ONNX Runtime failed on the conversion of {text}"),
        inputs,
        graph_outputs,
        rtol=rtol,
        atol=atol,
        what=f"the ONNX conversion of {text}",
        ties=_label_ties(model) if flavor == "sklearn" else None,
    )
    parity = {"rtol": rtol, "atol": atol, "inputs": len(inputs), "outputs": diffs}
    _write(source, descriptor, target, proto, onnx_flavor, converter, parity, text, overwrite)
    return target


def _label_ties(model: Any) -> Callable[[Any], Any] | None:
    """For a classifier's labels: the rows whose two likeliest classes tie exactly."""
    import numpy as np

    config = model.descriptor.flavors[model.descriptor.loader]
    native = model.unwrap()
    if config.get("predict_method", "predict") != "predict" or not hasattr(native, "predict_proba"):
        return None

    def ties(data: Any) -> Any:
        if not hasattr(native, "feature_names_in_") and hasattr(data, "to_numpy"):
            data = data.to_numpy()  # fitted on an array: give it one, as the predictor does
        try:
            proba = np.asarray(native.predict_proba(data), dtype=np.float64)
        except Exception:
            return None  # no probabilities for this model after all: compare labels as they are
        if proba.ndim != 2 or proba.shape[1] < 2:
            return None
        top = np.sort(proba, axis=1)
        return np.asarray(top[:, -1] - top[:, -2] <= 1e-12)

    return ties


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


def _export(
    flavor: str, model: Any, sample: Any, opset: int | None, predict: Callable[[Any], Any]
) -> tuple[Any, dict[str, str]]:
    from modelpack import _onnx_export

    if flavor == "sklearn":
        import skl2onnx

        method = str(model.descriptor.flavors[flavor].get("predict_method", "predict"))
        proto = _onnx_export.sklearn_to_onnx(model.unwrap(), model.signature, method, opset)
        return proto, {"tool": "skl2onnx", "version": skl2onnx.__version__}
    import torch

    produced = predict(sample)
    names = list(produced) if isinstance(produced, dict) else ["output"]
    proto = _onnx_export.torch_to_onnx(model.unwrap(), model.signature, sample, names, opset)
    return proto, {"tool": "torch.onnx", "version": str(torch.__version__)}


def _align_shapes(proto: Any, produced: Any, names: list[str], data: Any) -> None:
    from modelpack._onnx_graph import match_output_shapes
    from modelpack.flavors.onnx import OnnxFlavor

    ran = _failing_as(OnnxFlavor().wrap(proto, {}).predict, "ONNX Runtime failed")(data)
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


def _write(
    source: Path,
    descriptor: Descriptor,
    target: Path,
    proto: Any,
    onnx_flavor: Any,
    converter: dict[str, str],
    parity: dict[str, Any],
    uri: str,
    overwrite: bool,
) -> None:
    with atomic_directory(target, overwrite=overwrite) as tmp:
        for rel in descriptor.files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, tmp / rel)
        if (tmp / MODEL_SUBDIR / "model.onnx").exists():
            raise ConversionError(f"{uri} already holds a model/model.onnx file")
        config = onnx_flavor.save(proto, tmp / MODEL_SUBDIR)
        config.update(converted_from=descriptor.loader, converter=converter, parity=parity)
        reqs_file = tmp / "requirements.txt"
        reqs = reqs_file.read_text(encoding="utf-8").split() if reqs_file.exists() else []
        reqs = pinned([*reqs, *onnx_flavor.requirements(config)])
        reqs_file.write_text("\n".join(reqs) + "\n", encoding="utf-8")
        converted = Descriptor(
            flavors={**descriptor.flavors, "onnx": config},
            loader=descriptor.loader,
            signature=descriptor.signature,
            input_example=descriptor.input_example,
            environment=environment_info(),
            metadata=dict(descriptor.metadata),
            parent=parent_info(uri, descriptor),
            trust=descriptor.trust,  # the loader is unchanged, and so is what it needs
        )
        converted.files = build_manifest(tmp)
        converted.write(tmp)
