"""The HuggingFace transformers flavor: text pipelines and model + tokenizer pairs.

``model/`` is what ``save_pretrained`` writes for the model (safetensors weights, config.json,
generation_config.json) and its tokenizer (tokenizer.json...); the descriptor records the task,
one of transformers' own pipeline tasks (``_transformers_tasks.PIPELINES``). Loading builds
``transformers.pipeline(task, ...)`` from those local files only, offline, and never with
``trust_remote_code``: the config's ``architectures`` are transformers' own classes (trusted by
default), while anything in an ``auto_map`` is code shipped with the model, which the trust
policy refuses. A bare ``PreTrainedModel`` stays with the torch flavor. See
docs/flavors/transformers.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelpack.errors import ConversionError, InvalidInputError, InvalidModelError
from modelpack.flavors import _transformers_tasks as _tasks
from modelpack.model import load_native, save_with
from modelpack.plugins import SPECIFIC, LoadOptions
from modelpack.signature import Signature
from modelpack.trust import CODE, MODULE, TYPE, Need, TrustArg

TASKS = tuple(_tasks.PIPELINES)
_PAIR_KEYS = frozenset({"model", "tokenizer", "task"})
_TOKENIZER_BASE = "transformers.tokenization_utils_base.PreTrainedTokenizerBase"
_PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# A model class name's ending -> the task a model + tokenizer pair serves by default.
_TASK_BY_HEAD = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("Model", "feature-extraction"),
)


class TransformersPredictor:
    def __init__(self, pipeline: Any, task: str) -> None:
        self.native = pipeline
        self._task = task

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        from transformers.pipelines.base import PipelineException

        checked = _tasks.check_params(self._task, params)
        values = _tasks.texts(data)
        try:
            return _tasks.predict(self.native, self._task, values, checked)
        except PipelineException as exc:  # e.g. a fill-mask input without its mask token
            raise InvalidInputError(f"{self._task}: {exc.args[-1]}") from exc


class TransformersFlavor:
    name = "transformers"
    priority = SPECIFIC  # a pipeline's model is also a torch nn.Module

    def accepts(self, obj: Any) -> bool:
        if _is(obj, "transformers.pipelines.base.Pipeline"):
            return True
        return (
            isinstance(obj, Mapping)
            and {"model", "tokenizer"} <= set(obj) <= _PAIR_KEYS
            and _is(obj["model"], "transformers.modeling_utils.PreTrainedModel")
            and _is(obj["tokenizer"], _TOKENIZER_BASE)
        )

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        return ["transformers", "tokenizers", "torch", "safetensors", "numpy", "pandas"]

    def save(self, obj: Any, path: Path, *, task: str | None = None) -> dict[str, Any]:
        """``task``: one of ``TASKS``; a pipeline's own by default, and for a model + tokenizer
        pair the one its head serves (``...ForSequenceClassification``: text-classification)."""
        import transformers

        pipe = _pipeline_of(obj, task)
        task = _task_of(pipe, task)
        model = pipe.model
        with _quiet():
            model.save_pretrained(str(path), safe_serialization=True)
            if pipe.tokenizer is None:
                raise InvalidModelError(f"this {task} pipeline has no tokenizer to save")
            pipe.tokenizer.save_pretrained(str(path))
        pickles = sorted(p.name for p in path.rglob("*") if p.suffix in _PICKLES)
        if pickles:
            raise InvalidModelError(f"save_pretrained wrote pickled files: {', '.join(pickles)}")
        cls, tok = type(model), type(pipe.tokenizer)
        return {
            "task": task,
            "pipeline_class": _tasks.PIPELINES[task],
            "framework": "pt",
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "tokenizer_class": f"{tok.__module__}.{tok.__qualname__}",
            "transformers_version": str(transformers.__version__),
        }

    def signature(self, path: Path, config: Mapping[str, Any]) -> Signature:
        hf = _read_json(path / "config.json")
        size = hf.get("hidden_size", hf.get("n_embd", hf.get("d_model")))
        return _tasks.signature(_known_task(config), size if isinstance(size, int) else None)

    def trust_needs(self, path: Path, config: Mapping[str, Any]) -> list[Need]:
        """The config class and ``architectures`` as transformers' own classes (trusted by
        default), a name transformers does not have as a module to grant by name, and every
        ``auto_map`` entry of config.json and tokenizer_config.json as shipped code."""
        import transformers
        from transformers.models.auto import configuration_auto

        names: Mapping[str, str] = getattr(configuration_auto, "CONFIG_MAPPING_NAMES", {})
        hf = _read_json(path / "config.json")
        needs: set[Need] = set()
        model_type = hf.get("model_type")
        config_class = names.get(str(model_type))
        if config_class is None:
            needs.add(Need(CODE, f"model/config.json: model_type {model_type!r}"))
        else:
            needs.add(Need(TYPE, _qualified(transformers, config_class)))
        for arch in hf.get("architectures") or []:
            needs.add(Need(MODULE, _qualified(transformers, str(arch))))
        tokenizer = path / "tokenizer_config.json"
        for file, data in (("config.json", hf), (tokenizer.name, _read_json(tokenizer, {}))):
            for ref in _auto_map(data.get("auto_map")):
                needs.add(Need(CODE, f"model/{file}: auto_map {ref}"))
        return sorted(needs)

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """The ``transformers.Pipeline`` of the saved task, on ``options.device``."""
        options.trust.check(self.trust_needs(path, config), model=str(path.parent))
        task = _known_task(config)
        import transformers

        device = None if options.device == "cpu" else options.device
        local = {"local_files_only": True, "trust_remote_code": False}
        with _offline(), _quiet():
            try:
                hf_config = transformers.AutoConfig.from_pretrained(str(path), **local)
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **local)
                build: Any = transformers.pipeline  # typed per literal task only
                pipe = build(
                    task,
                    model=str(path),
                    config=hf_config,
                    tokenizer=tokenizer,
                    trust_remote_code=False,
                    device=device,
                    model_kwargs={"use_safetensors": True},
                )
            except (OSError, ValueError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise InvalidModelError(f"cannot load the {task} pipeline: {reason}") from exc
        pipe.model.eval()
        return pipe

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> TransformersPredictor:
        return TransformersPredictor(self.load(path, config, options), _known_task(config))

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> TransformersPredictor:
        return TransformersPredictor(_pipeline_of(obj, config.get("task")), _known_task(config))

    def export_onnx(
        self,
        native: Any,
        config: Mapping[str, Any],
        signature: Signature,
        example: Any,
        *,
        opset: int | None = None,
    ) -> Any:
        """Refused: a pipeline takes strings, tokenized in Python, and answers labels and JSON;
        an ONNX graph takes token ids. The model itself converts through the torch flavor
        (docs/flavors/transformers.md)."""
        raise ConversionError(
            f"a transformers {_known_task(config)} pipeline takes strings and tokenizes them "
            "in Python, which its ONNX graph cannot: save its model with the torch flavor "
            "(modelpack.save(pipe.model, path, input_example={'input_ids': ..., "
            "'attention_mask': ...})) and convert that"
        )


def _is(obj: Any, qualified: str) -> bool:
    """Whether ``obj``'s class is or derives from ``qualified``, told by names only."""
    return any(f"{c.__module__}.{c.__qualname__}" == qualified for c in type(obj).__mro__)


def _pipeline_of(obj: Any, task: str | None) -> Any:
    if _is(obj, "transformers.pipelines.base.Pipeline"):
        return obj
    import transformers

    given = obj.get("task")
    if given is not None and task is not None and given != task:
        raise InvalidModelError(f"two tasks given: {given!r} in the dict and task={task!r}")
    chosen = _check_task(given or task or _task_of_head(obj["model"]))
    build: Any = transformers.pipeline  # typed per literal task only
    with _quiet():
        return build(chosen, model=obj["model"], tokenizer=obj["tokenizer"])


def _task_of(pipe: Any, task: str | None) -> str:
    cls = type(pipe)
    found = next((t for t, name in _tasks.PIPELINES.items() if name == cls.__name__), None)
    if found is None or not cls.__module__.startswith("transformers.pipelines."):
        raise InvalidModelError(
            f"the transformers flavor saves the pipelines of {', '.join(TASKS)}; "
            f"{cls.__module__}.{cls.__qualname__} is not one of them"
        )
    if task is not None and _check_task(task) != found:
        raise InvalidModelError(f"this pipeline's task is {found!r}, not {task!r}")
    return found


def _task_of_head(model: Any) -> str:
    name = type(model).__name__
    for ending, task in _TASK_BY_HEAD:
        if name.endswith(ending):
            return task
    raise InvalidModelError(
        f"cannot tell the task of a {name}; pass task= one of {', '.join(TASKS)}"
    )


def _check_task(task: str) -> str:
    if task not in _tasks.PIPELINES:
        raise InvalidModelError(f"unknown task {task!r}; the transformers flavor serves {TASKS}")
    return task


def _known_task(config: Mapping[str, Any]) -> str:
    task = config.get("task")
    if task not in _tasks.PIPELINES:
        raise InvalidModelError(f"unknown transformers task {task!r} in the model's config")
    return str(task)


def _qualified(transformers: Any, name: str) -> str:
    """``transformers.models.bert.modeling_bert.BertModel`` for ``BertModel``; a name that is
    not one of transformers' own classes stays ``transformers.NAME`` (not trusted by default)."""
    try:
        cls = getattr(transformers, name, None) if name.isidentifier() else None
    except (ImportError, RuntimeError):  # a class whose backend is missing
        cls = None
    if isinstance(cls, type) and cls.__name__ == name:
        return f"{cls.__module__}.{cls.__qualname__}"
    return f"transformers.{name}"


def _auto_map(value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return []
    refs: list[str] = []
    for key, target in value.items():
        for item in target if isinstance(target, list) else [target]:
            if item:
                refs.append(f"{key}={item}")
    return refs


def _read_json(file: Path, missing: Any = None) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing is not None:
            return dict(missing)
        raise InvalidModelError(f"{file.name} is missing from the saved model") from None
    except (OSError, ValueError) as exc:
        raise InvalidModelError(f"{file.name}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidModelError(f"{file.name}: not a JSON object")
    return data


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    # Nothing is fetched from a hub: HF_HUB_OFFLINE for the call (huggingface_hub reads it once,
    # at import, so its constant is set too), both put back after.
    from huggingface_hub import constants

    before_env, before = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # No progress bars in a server's log for every load (a library default, put back after).
    from transformers.utils import logging

    hf_logging: Any = logging
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


_FLAVOR = TransformersFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    task: str | None = None,
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a ``transformers.Pipeline`` or ``{"model": ..., "tokenizer": ..., "task": ...}``."""
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        task=task,
    )


def load(path: str | os.PathLike[str], *, device: str = "cpu", trust: TrustArg = None) -> Any:
    """The ``transformers.Pipeline`` saved at ``path``."""
    return load_native("transformers", path, device=device, trust=trust)
