"""Conformance checks that plugin authors run over their own plugins.

``check_flavor`` is to a modelpack flavor what scikit-learn's ``check_estimator``
is to an estimator: every built-in flavor passes it, and so must a third-party one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sized
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelpack import plugins
from modelpack.descriptor import Descriptor, verify_manifest
from modelpack.errors import IntegrityError, ModelExistsError
from modelpack.model import MODEL_SUBDIR, load, save_with
from modelpack.plugins import Flavor, LoadOptions
from modelpack.trust import Trust


def check_flavor(
    flavor: Flavor | str, model: Any, input_example: Any, tmp_dir: str | Path | None = None
) -> None:
    """Run every flavor check; raise AssertionError naming the first one that fails."""
    if isinstance(flavor, str):
        flavor = plugins.flavor(flavor)
    else:
        plugins.check_plugin("flavor", flavor, label=repr(flavor))
    if tmp_dir is None:
        with tempfile.TemporaryDirectory(prefix="modelpack-check-") as tmp:
            _run_checks(flavor, model, input_example, Path(tmp))
    else:
        _run_checks(flavor, model, input_example, Path(tmp_dir))


def _run_checks(flavor: Flavor, model: Any, example: Any, tmp: Path) -> None:
    name = flavor.name
    _expect(isinstance(name, str) and name.isidentifier(), f"name {name!r} is not an identifier")
    _expect(flavor.accepts(model) is True, f"{name}.accepts(model) is not True")
    _expect(flavor.accepts(object()) is False, f"{name}.accepts(object()) is not False")

    path = save_with(flavor, model, tmp / "model", input_example=example)
    descriptor = Descriptor.read(path)
    _expect(descriptor.loader == name, f"descriptor loader is {descriptor.loader!r}, not {name!r}")
    config = descriptor.flavors[name]
    _expect(isinstance(config, dict), f"{name}.save must return a dict config")
    yaml.safe_dump(config)  # the config must be plain data
    reqs = list(flavor.requirements(config))
    _expect(all(isinstance(r, str) for r in reqs), f"{name}.requirements must return strings")
    verify_manifest(path, descriptor.files)
    _expect(descriptor.signature is not None, "no signature was inferred from the input example")

    # The conformance check trusts what the model needs: it tests the flavor, not the policy.
    trust = bool((descriptor.trust or {}).get("executes_code"))
    first = load(path, trust=trust).predict(example)
    second = load(path, trust=trust).predict(example)
    _expect(_same(first, second), "two loads of one model predict differently")
    rows = len(example) if isinstance(example, Sized) and not isinstance(example, dict) else None
    if rows is not None and isinstance(first, Sized) and not isinstance(first, dict):
        _expect(len(first) == rows, f"predict returned {len(first)} rows for {rows} input rows")
    options = LoadOptions(trust=Trust(everything=trust))
    native = flavor.load(path / MODEL_SUBDIR, config, options)
    _expect(native is not None, f"{name}.load returned None")

    try:
        save_with(flavor, model, path, input_example=example)
    except ModelExistsError:
        pass
    else:
        raise AssertionError("saving over an existing model without overwrite=True succeeded")
    save_with(flavor, model, path, input_example=example, overwrite=True)

    files = sorted(Descriptor.read(path).files)
    # Damage the flavor's own file where it wrote one (a class-only python model writes none).
    victim = path / next((f for f in files if f.startswith("model/")), files[0])
    data = bytearray(victim.read_bytes())
    _expect(len(data) > 0, f"{victim.name} is empty")
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    try:
        load(path, trust=trust)
    except IntegrityError as exc:
        _expect(victim.name in str(exc), f"IntegrityError does not name {victim.name}: {exc}")
    else:
        raise AssertionError("a changed byte in a model file was not detected at load")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "equals"):
        return bool(a.equals(b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=_numeric(a)))


def _numeric(a: Any) -> bool:
    return np.asarray(a).dtype.kind in "fc"


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"flavor check failed: {message}")
