"""MLflow's ``transformers`` flavor: a saved pipeline, loaded as modelpack's transformers flavor.

MLflow writes the model's ``save_pretrained`` files under ``model/`` (its ``model_binary``) and
each component's under ``components/NAME/``. modelpack's flavor reads one folder holding the
model and its tokenizer, so the import links both into a scratch folder and loads it with that
flavor's own loader: offline, ``trust_remote_code=False``, safetensors weights only, the
config's classes and any ``auto_map`` asked of the trust policy. Weights MLflow saved only as a
pickled ``.bin`` are unpickled (torch's ``weights_only`` loader) once the policy allows it, and
rewritten as safetensors for that loader.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from modelpack.errors import InvalidModelError, UnsupportedModelError
from modelpack.trust import Trust

_MODEL_FILES_KEPT = ("config.json", "generation_config.json")  # a component's never replace them


def load(
    weights: Path, tokenizer: Path, task: str, pickles: list[Path], trust: Trust, what: str
) -> Any:
    """The pipeline MLflow saved (``weights``: its ``model/``, ``tokenizer``: its tokenizer
    component), loaded by modelpack's transformers flavor; ``pickles``: the ``.bin`` weights the
    caller's trust policy allowed, when there are no safetensors. The weights are read before
    this returns, so the scratch folder can go."""
    from modelpack import plugins
    from modelpack.model import trust_needs
    from modelpack.plugins import LoadOptions

    flavor = plugins.flavor("transformers")
    config = {"task": task}
    with tempfile.TemporaryDirectory(prefix="modelpack-mlflow-hf-") as work:
        folder = Path(work)
        for source, keep in ((weights, ()), (tokenizer, _MODEL_FILES_KEPT)):
            for file in sorted(source.iterdir()):
                if file.is_file() and file.name not in keep:
                    (folder / file.name).unlink(missing_ok=True)
                    (folder / file.name).symlink_to(file)
        trust.check(trust_needs(flavor, folder, config), model=what)
        if pickles:
            _as_safetensors(pickles, folder)
        elif not any(weights.glob("*.safetensors")):
            raise InvalidModelError(f"{what}: {weights.name}/ holds no model weights")
        try:
            return flavor.load(folder, config, LoadOptions(trust=trust))
        except InvalidModelError as exc:
            raise InvalidModelError(f"{what}: {exc}") from exc


def pickled_weights(weights: Path) -> list[Path]:
    """The ``.bin`` files that hold the weights when no safetensors file does."""
    return [] if any(weights.glob("*.safetensors")) else sorted(weights.glob("*.bin"))


def check_supported(conf: dict[str, Any], what: str) -> None:
    """Refuses, in one line, what cannot be imported offline as a text pipeline."""
    task = conf.get("task")
    if not conf.get("model_binary"):
        repo = conf.get("source_model_name") or "a hub repository"
        raise UnsupportedModelError(
            f"{what} was saved with save_pretrained=False: it names {repo} "
            f"(revision {conf.get('source_model_revision', '?')}) instead of holding its "
            "weights, which cannot be imported offline; save it with save_pretrained=True"
        )
    if conf.get("peft_adaptor") or conf.get("local_base_model_path"):
        raise UnsupportedModelError(f"{what}: a PEFT adapter model is not imported")
    if conf.get("framework", "pt") != "pt":
        raise UnsupportedModelError(f"{what}: only PyTorch transformers models are imported")
    components = [str(c) for c in conf.get("components") or []]
    if "tokenizer" not in components:
        raise UnsupportedModelError(f"{what}: a {task or 'transformers'} model with no tokenizer")
    others = sorted(set(components) - {"tokenizer"}) + (
        ["processor"] if "processor_type" in conf else []
    )
    if others:
        raise UnsupportedModelError(
            f"{what}: its {', '.join(others)} component(s) are not imported (text pipelines only)"
        )


def pipeline_task(conf: dict[str, Any], what: str) -> str:
    """The MLflow task as transformers names it (``sentiment-analysis``: text-classification)."""
    from transformers.pipelines import check_task

    task = str(conf.get("task") or "")
    try:
        return str(check_task(task)[0])
    except KeyError:
        raise UnsupportedModelError(
            f"{what}: {task!r} is not a transformers pipeline task"
        ) from None


def _as_safetensors(pickles: list[Path], folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    state: dict[str, Any] = {}
    for file in pickles:  # one file, or the shards of one
        state.update(torch.load(str(file), map_location="cpu", weights_only=True))
        (folder / file.name).unlink(missing_ok=True)
    (folder / "pytorch_model.bin.index.json").unlink(missing_ok=True)
    # Tied weights share storage, which safetensors refuses: each tensor is saved on its own.
    tensors = {k: v.contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
