"""Saving any object with a flavor, and loading any saved model for inference."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from modelpack import plugins
from modelpack._artifact_paths import safe_relpath
from modelpack._fs import atomic_directory, walk_files
from modelpack.descriptor import Descriptor, FileEntry, build_manifest, verify_manifest
from modelpack.environment import environment_info, pinned
from modelpack.errors import (
    IntegrityError,
    InvalidInputError,
    InvalidModelError,
    ModelpackError,
    PluginError,
    UnsafePathError,
    UnsupportedModelError,
)
from modelpack.payload import decode, encode_example
from modelpack.plugins import (
    ChecksTrust,
    DeclaresSignature,
    Flavor,
    LoadOptions,
    Predictor,
    Wraps,
)
from modelpack.predictor import EnforcingPredictor
from modelpack.signature import Signature, infer_schema
from modelpack.trust import (
    Need,
    Trust,
    TrustArg,
    TrustNeededWarning,
    descriptor_digest,
    grant_hint,
    needing_trust,
    policy,
)
from modelpack.uris import resolve

MODEL_SUBDIR = "model"
EXAMPLE_FILE = "input_example.json"
REQUIREMENTS_FILE = "requirements.txt"


def pick_flavor(obj: Any) -> Flavor:
    """The installed flavor that accepts ``obj``: the highest ``priority`` first, then by name."""
    flavors, broken = [], []
    for name in plugins.names("flavor"):
        try:
            flavors.append(plugins.flavor(name))
        except PluginError:  # one broken plugin must not stop the others from saving
            broken.append(name)
    flavors.sort(key=lambda f: (-plugins.priority(f), f.name))
    for flavor in flavors:
        if flavor.accepts(obj):
            return flavor
    unusable = f"; broken: {', '.join(broken)}" if broken else ""
    raise UnsupportedModelError(
        f"no installed flavor can save a {type(obj).__module__}.{type(obj).__qualname__} "
        f"(installed flavors: {', '.join(f.name for f in flavors)}{unusable}); "
        "wrap it in a class with a predict method to use the python flavor"
    )


def save(
    obj: Any,
    path: str | os.PathLike[str],
    *,
    signature: Signature | Mapping[str, Any] | None = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Save ``obj`` as a model directory at ``path`` with the flavor that fits its type."""
    return save_with(
        pick_flavor(obj),
        obj,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        **options,
    )


def save_with(
    flavor: Flavor,
    obj: Any,
    path: str | os.PathLike[str],
    *,
    signature: Signature | Mapping[str, Any] | None = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
    parent: Mapping[str, Any] | None = None,
    base: Model | None = None,
    **options: Any,
) -> Path:
    """Save ``obj`` with an explicitly chosen flavor (what ``flavors.<name>.save`` calls).

    ``base``: a loaded model that ``obj`` is another flavor of (what ``modelpack convert``
    writes): the new model holds the base's files too, and keeps its flavors, loader,
    signature, input example, metadata (updated with ``metadata``) and trust record.
    """
    target = Path(path)
    sig = Signature.from_dict(signature) if isinstance(signature, Mapping) else signature
    if base is not None:
        _check_base(base, flavor, input_example)
        sig = sig or base.signature
    with atomic_directory(target, overwrite=overwrite) as tmp:
        model_dir = tmp / MODEL_SUBDIR
        _check_options(flavor, options)
        if base is None:
            model_dir.mkdir()
            config = flavor.save(obj, model_dir, **options)
        else:
            config = _save_beside(base, flavor, obj, tmp, options)
        if sig is None and isinstance(flavor, DeclaresSignature):
            # Formats that declare their inputs (an ONNX graph) give the signature themselves.
            sig = flavor.signature(model_dir, config)
        example_info = None
        if input_example is not None:
            body = encode_example(input_example)
            (tmp / EXAMPLE_FILE).write_bytes(orjson.dumps(body))
            example_info = {"file": EXAMPLE_FILE, "format": next(iter(body))}
            sig = _example_signature(flavor, obj, model_dir, config, input_example, sig)
        needs = trust_needs(flavor, model_dir, config)
        kept = _requirements(tmp / REQUIREMENTS_FILE) if base is not None else []
        reqs = pinned([*kept, *flavor.requirements(config), *(requirements or [])])
        (tmp / REQUIREMENTS_FILE).write_text("\n".join(reqs) + "\n", encoding="utf-8")
        descriptor = Descriptor(
            flavors={flavor.name: config},
            loader=flavor.name,
            signature=sig.to_dict() if sig else None,
            input_example=example_info,
            environment=environment_info(),
            metadata=dict(metadata or {}),
            parent=dict(parent) if parent else None,
            trust=trust_record(needs),
        )
        if base is not None:
            descriptor = _beside(base, descriptor)
        descriptor.files = build_manifest(tmp)
        if base is not None:
            _check_copies(base, descriptor.files)
        descriptor.write(tmp)
    _tell_trust(target, needs)
    return target


def _check_base(base: Model, flavor: Flavor, input_example: Any) -> None:
    if flavor.name in base.descriptor.flavors:
        raise InvalidModelError(f"{base.path} already has a {flavor.name} flavor")
    if input_example is not None:
        raise InvalidInputError("a flavor added to a model keeps that model's input example")


def _save_beside(
    base: Model, flavor: Flavor, obj: Any, tmp: Path, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Copy ``base``'s files into ``tmp``, then save ``obj`` with ``flavor`` beside them."""
    for rel in base.descriptor.files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base.path / rel, tmp / rel)
    model_dir = tmp / MODEL_SUBDIR
    model_dir.mkdir(exist_ok=True)
    staging = tmp / f".{flavor.name}-saving"  # a flavor saves into an empty directory
    staging.mkdir()
    config = flavor.save(obj, staging, **options)
    for rel in walk_files(staging):
        if (model_dir / rel).exists():
            raise InvalidModelError(
                f"{base.path} already holds {MODEL_SUBDIR}/{rel}, which the {flavor.name} "
                "flavor writes"
            )
        (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).rename(model_dir / rel)
    shutil.rmtree(staging)
    return config


def _requirements(file: Path) -> list[str]:
    lines = file.read_text(encoding="utf-8").splitlines() if file.is_file() else []
    return [spec for line in lines if (spec := line.split("#", 1)[0].strip())]


def _beside(base: Model, added: Descriptor) -> Descriptor:
    """``added``'s flavor beside ``base``'s, which stays the loader with what it recorded."""
    return dataclasses.replace(
        added,
        flavors={**base.descriptor.flavors, **added.flavors},
        loader=base.descriptor.loader,
        input_example=base.descriptor.input_example,
        metadata={**base.descriptor.metadata, **added.metadata},
        trust=base.descriptor.trust,  # the loader is unchanged, and so is what it needs
    )


def _check_copies(base: Model, files: Mapping[str, FileEntry]) -> None:
    for rel, entry in base.descriptor.files.items():
        if rel != REQUIREMENTS_FILE and files.get(rel) != entry:
            raise IntegrityError(
                f"{base.path}: file {rel} changed since the model was loaded", file=rel
            )


def _tell_trust(target: Path, needs: Sequence[Need]) -> None:
    untrusted = needing_trust(needs)
    if untrusted:
        warnings.warn(
            f"loading {target} will run {', '.join(map(str, untrusted))}: it loads only with "
            f"{grant_hint(untrusted)}; `modelpack scan` and `inspect` show this too",
            TrustNeededWarning,
            stacklevel=3,
        )


def _check_options(flavor: Flavor, options: Mapping[str, Any]) -> None:
    params = inspect.signature(flavor.save).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidModelError(
            f"the {flavor.name} flavor has no option {', '.join(map(repr, unknown))} "
            f"(valid: {', '.join(valid) or 'none'})"
        )


def _example_signature(
    flavor: Flavor,
    obj: Any,
    model_dir: Path,
    config: Mapping[str, Any],
    example: Any,
    given: Signature | None,
) -> Signature:
    if given is not None:
        given.enforce(example)  # an example that contradicts the signature is a user mistake
        return given
    inputs = infer_schema(example)
    sig = Signature(inputs=inputs)
    predictor: Predictor = (
        flavor.wrap(obj, config)
        if isinstance(flavor, Wraps)
        else flavor.predictor(model_dir, config, LoadOptions(trust=Trust.all()))
    )
    output = predictor.predict(sig.enforce(example))
    return Signature(inputs=inputs, outputs=infer_schema(output))


class Model:
    """A saved model loaded for inference, whatever its flavor."""

    def __init__(
        self,
        path: Path,
        descriptor: Descriptor,
        flavor: Flavor,
        predictor: Predictor,
        options: LoadOptions | None = None,
    ) -> None:
        self.path = path
        self.descriptor = descriptor
        self.flavor = flavor
        self.signature = descriptor.model_signature
        # The flavor's predictor behind the signature: what servers, batch and Spark call too.
        self.predictor = EnforcingPredictor(predictor, self.signature)
        self._options = options or LoadOptions()

    @property
    def metadata(self) -> dict[str, Any]:
        return self.descriptor.metadata

    @property
    def model_id(self) -> str:
        return self.descriptor.model_id

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Check ``data`` against the signature (``SignatureError``), then predict."""
        return self.predictor.predict(data, params)

    def input_example(self) -> Any:
        info = self.descriptor.input_example
        if not info:
            return None
        data, _ = decode(orjson.loads((self.path / info["file"]).read_bytes()))
        return self.predictor.enforce(data)

    def unwrap(self) -> Any:
        """The native object (an estimator, an ``nn.Module``, an ONNX session...)."""
        native = self.predictor.native
        if native is not None:
            return native
        config = self.descriptor.flavors[self.descriptor.loader]
        return self.flavor.load(self.path / MODEL_SUBDIR, config, self._options)

    def __repr__(self) -> str:
        return f"<Model {self.descriptor.loader} {self.model_id} at {self.path}>"


def load(
    uri: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trust: TrustArg = None,
    digest: str | None = None,
    flavor: str | None = None,
    settings: Mapping[str, Any] | None = None,
    trust_pickle: bool | None = None,
) -> Model:
    """Load any saved model for inference: ``modelpack.load(uri).predict(data)``.

    Nothing named by the model runs unless trusted (``modelpack.trust``): ``trust=True`` trusts
    everything, ``trust=["pkg.Type", ...]`` those exact names; ``MODELPACK_TRUST`` and
    ``modelpack trust add`` grant the same. ``digest`` ("sha256:..." or hex) pins the model's
    content: a different descriptor is an ``IntegrityError``. ``flavor`` loads another of the
    model's flavors (``"onnx"``: ONNX Runtime on ``device``); ``settings`` are that flavor's
    own load settings. ``trust_pickle`` is deprecated.
    """
    path, descriptor = _open(uri, digest)
    chosen = plugins.flavor(_flavor_name(path, descriptor, flavor or descriptor.loader))
    options = LoadOptions(
        device=device, trust=policy(trust, trust_pickle=trust_pickle), settings=settings or {}
    )
    predictor = _verified(path, descriptor, chosen.name, options, lambda f, *a: f.predictor(*a))
    return Model(path, descriptor, chosen, predictor, options)


def load_native(
    flavor_name: str,
    uri: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trust: TrustArg = None,
    trust_pickle: bool | None = None,
) -> Any:
    """The native object of the ``flavor_name`` flavor (what ``flavors.<name>.load`` calls)."""
    path, descriptor = _open(uri)
    name = _flavor_name(path, descriptor, flavor_name)
    options = LoadOptions(device=device, trust=policy(trust, trust_pickle=trust_pickle))
    return _verified(path, descriptor, name, options, lambda f, *a: f.load(*a))


def _open(uri: str | os.PathLike[str], digest: str | None = None) -> tuple[Path, Descriptor]:
    path = resolve(Path(uri) if isinstance(uri, os.PathLike) else uri)
    if digest is not None:
        check_digest(path, digest)
    return path, Descriptor.read(path)


def check_digest(path: Path, expected: str) -> str:
    """The model's content digest, which must be ``expected`` ("sha256:<hex>" or "<hex>")."""
    actual = descriptor_digest(path)
    if expected.strip().lower().removeprefix("sha256:") != actual:
        raise IntegrityError(
            f"{path}: the model's digest is sha256:{actual}, not {expected}: "
            "its descriptor differs from the one pinned",
            file="modelpack.yaml",
        )
    return actual


def _flavor_name(path: Path, descriptor: Descriptor, name: str) -> str:
    if name not in descriptor.flavors:
        raise InvalidModelError(
            f"{path} has no {name!r} flavor (it has: {', '.join(descriptor.flavors)})"
        )
    return name


def check_trust(
    uri: str | os.PathLike[str], trust: TrustArg = None, *, flavor: str | None = None
) -> list[Need]:
    """Raise :class:`UntrustedModelError` unless ``trust`` covers what loading ``uri`` needs.

    Nothing is imported or built: what ``serve`` and Spark ask before they start. Returns the
    needs that were granted (empty for a model that loads with no trust).
    """
    path, _, needs = untrusted_needs(uri, flavor=flavor)
    policy(trust).for_model(path).check(needs, model=str(path))
    return needs


def untrusted_needs(
    uri: str | os.PathLike[str], *, flavor: str | None = None
) -> tuple[Path, Descriptor, list[Need]]:
    """What loading ``uri`` with ``flavor`` (default: its loader) needs trust for."""
    path, descriptor = _open(uri)
    name = _flavor_name(path, descriptor, flavor or descriptor.loader)
    needs = _needs(plugins.flavor(name), path, descriptor, descriptor.flavors[name])
    return path, descriptor, needing_trust(needs)


# Config keys through which flavors name their files under model/.
_FILE_KEYS = frozenset({"file", "structure", "extra", "weights", "tokenizer"})


def check_config_paths(config: Any, where: str) -> None:
    """Refuse a flavor config that names a file outside ``model/`` (``../x``, ``/etc/x``).

    Whoever edits a descriptor and reseals it could otherwise point a flavor at a file the
    manifest does not cover; checked before any flavor reads one, for the config's own file
    keys and those of a part stored by another flavor (``final.config``).
    """
    if not isinstance(config, Mapping):
        return
    for key in _FILE_KEYS & set(config):
        value = config[key]
        if isinstance(value, str):
            try:
                safe_relpath(value)
            except UnsafePathError as exc:
                raise UnsafePathError(f"{where}: {key} {value!r}: {exc.message}") from None
    final = config.get("final")
    if isinstance(final, Mapping):
        check_config_paths(final.get("config"), where)


def _needs(
    flavor: Flavor, path: Path, descriptor: Descriptor, config: Mapping[str, Any]
) -> list[Need]:
    check_config_paths(config, f"{path}: the {flavor.name} flavor's config")
    try:
        return trust_needs(flavor, path / MODEL_SUBDIR, config)
    except ModelpackError:
        verify_manifest(path, descriptor.files, cached=True)  # a corrupt file says it better
        raise


def trust_needs(flavor: Flavor, model_dir: Path, config: Mapping[str, Any]) -> list[Need]:
    """What loading the flavor's files would run or construct (read without running anything)."""
    if not isinstance(flavor, ChecksTrust):
        return []
    return sorted(set(flavor.trust_needs(model_dir, config)))


def trust_record(needs: Sequence[Need]) -> dict[str, Any]:
    """What the descriptor records at save: does loading run code, and what needs trust."""
    untrusted = needing_trust(needs)
    return {"executes_code": bool(untrusted), "needs": [n.to_dict() for n in untrusted]}


def _verified(
    path: Path,
    descriptor: Descriptor,
    name: str,
    options: LoadOptions,
    build: Callable[[Flavor, Path, Mapping[str, Any], LoadOptions], Any],
) -> Any:
    """``build`` the flavor's object once the trust policy allows it and the files are verified.

    The trust check comes first and reads the files without running anything from them, so a
    refused load has no side effect. Formats that run nothing named by the files (safetensors,
    skops with only default-trusted types, ONNX) are read while the manifest hashes in another
    thread, so the load costs max(read, hash), not their sum; anything granted by trust waits
    for the check. Files an earlier load verified, unchanged since, are not hashed again.
    """
    flavor = plugins.flavor(name)
    config = descriptor.flavors[name]
    model_dir = path / MODEL_SUBDIR
    needs = _needs(flavor, path, descriptor, config)
    trust = options.trust.for_model(path)
    trust.check(needs, model=str(path))
    options = dataclasses.replace(options, trust=trust)
    args = (flavor, model_dir, config, options)
    if needing_trust(needs):
        verify_manifest(path, descriptor.files, cached=True)
        return build(*args)
    with ThreadPoolExecutor(1) as pool:
        verified = pool.submit(verify_manifest, path, descriptor.files, cached=True)
        try:
            built = build(*args)
        except Exception:
            verified.result()  # a corrupt file explains the failure better than the flavor
            raise
        verified.result()
    return built
