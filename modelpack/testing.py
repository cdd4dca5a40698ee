"""Conformance checks that plugin authors run over their own plugins.

``check_flavor`` is to a modelpack flavor what scikit-learn's ``check_estimator``
is to an estimator: every built-in flavor passes it, and so must a third-party one.
``check_deployer`` drives a deployer through ``modelpack.deploy`` against its live target;
``check_server`` serves a small Predictor with a server's ``app`` on a real uvicorn.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from modelpack import errors, plugins
from modelpack.descriptor import Descriptor, verify_manifest
from modelpack.errors import IntegrityError, ModelExistsError
from modelpack.model import MODEL_SUBDIR, load, save_with
from modelpack.plugins import Deployer, Flavor, LoadOptions, Predictor, Server
from modelpack.trust import Trust

if TYPE_CHECKING:
    from modelpack.signature import Signature


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


def _expect(condition: bool, message: str, *, what: str = "flavor") -> None:
    if not condition:
        raise AssertionError(f"{what} check failed: {message}")


def _deployer_ok(condition: bool, message: str) -> None:
    _expect(condition, message, what="deployer")


def _server_ok(condition: bool, message: str) -> None:
    _expect(condition, message, what="server")


# -- deployers -------------------------------------------------------------------------------

_UNKNOWN_OPTION = "modelpack_check_unknown_option"


def check_deployer(
    deployer: Deployer | str,
    model_uri: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    *,
    name: str = "modelpack-check",
    update_uri: str | os.PathLike[str] | None = None,
    data: Any = None,
    predicts: bool = True,
    timeout: float = 300.0,
) -> None:
    """Drive a deployer through ``modelpack.deploy``; raise AssertionError naming the first
    check that fails.

    It checks what the ``Deployer`` Protocol says: ``name`` and ``options`` declared, ``plan``
    without side effects, ``get`` of an unknown name a ``DeploymentError``, an unknown option
    refused in one line; then it creates ``name`` (which must not exist) from ``model_uri`` and
    waits until ``get`` says ready, predicts ``data`` (default: the model's input example) and
    compares with ``modelpack.load``, finds it in ``list``, updates it to ``update_uri`` (default:
    the same model), deletes it and checks that ``get`` refuses it. ``predicts=False`` skips the
    predictions for a target that serves nothing where the check runs (an export such as
    bentoml, a cluster without nodes). Whatever it created is deleted, pass or fail.
    """
    from modelpack import deploy

    if isinstance(deployer, str):
        deployer = plugins.deployer(deployer)
    else:
        plugins.check_plugin("deployer", deployer, label=repr(deployer))
    config = dict(config or {})
    uri, new_uri = str(model_uri), str(update_uri or model_uri)
    _check_declarations(deployer, config)
    _expect_absent(deployer, name, config, "before the check")
    before = _names(deployer, config)
    plan = deploy.plan(deployer, name, uri, config)
    _deployer_ok(
        plan.target == deployer.name and all(isinstance(a, str) for a in plan.actions),
        f"plan answered for target {plan.target!r} or with actions that are not strings",
    )
    _deployer_ok(_names(deployer, config) == before, "plan changed the list of deployments")
    _expect_absent(deployer, name, config, "after plan")
    _expect_refused(deployer, name, uri, config)
    try:
        created = deploy.create(deployer, name, uri, config, timeout=timeout)
        _expect_deployment(created, deployer, name, uri, "create")
        _expect_deployment(deploy.get(deployer, name, config), deployer, name, uri, "get")
        if predicts:
            _expect_predictions(deployer, name, uri, data, config)
        _deployer_ok(name in _names(deployer, config), f"list does not include {name!r}")
        updated = deploy.update(deployer, name, new_uri, config, timeout=timeout)
        _expect_deployment(updated, deployer, name, new_uri, "update")
        if predicts:
            _expect_predictions(deployer, name, new_uri, data, config)
    finally:
        with contextlib.suppress(errors.DeploymentError):
            deploy.delete(deployer, name, config)
    _expect_absent(deployer, name, config, "after delete")
    _deployer_ok(name not in _names(deployer, config), f"list still includes {name!r} after delete")


def _check_declarations(deployer: Deployer, config: Mapping[str, Any]) -> None:
    _deployer_ok(
        isinstance(deployer.name, str) and bool(deployer.name), "name is not a non-empty string"
    )
    options = deployer.options
    _deployer_ok(
        isinstance(options, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in options.items()),
        "options must map each option key to its help text",
    )
    undeclared = sorted(set(config) - set(options))
    _deployer_ok(
        not undeclared, f"the config's {', '.join(undeclared)} are not declared in options"
    )


def _names(deployer: Deployer, config: Mapping[str, Any]) -> set[str]:
    from modelpack import deploy

    return {d.name for d in deploy.list(deployer, config)}


def _expect_absent(deployer: Deployer, name: str, config: Mapping[str, Any], when: str) -> None:
    from modelpack import deploy

    try:
        deploy.get(deployer, name, config)
    except errors.DeploymentError as exc:
        _deployer_ok(
            name in str(exc), f"get of the unknown {name!r} {when} does not name it: {exc}"
        )
    else:
        raise AssertionError(
            f"deployer check failed: get({name!r}) {when} answered; it must raise DeploymentError"
            + (" (choose another name)" if when == "before the check" else "")
        )


def _expect_refused(deployer: Deployer, name: str, uri: str, config: Mapping[str, Any]) -> None:
    from modelpack import deploy

    try:
        deploy.plan(deployer, name, uri, {**config, _UNKNOWN_OPTION: 1})
    except errors.InvalidInputError as exc:
        text = str(exc)
        _deployer_ok(_UNKNOWN_OPTION in text and "\n" not in text, f"unclear refusal: {text!r}")
    else:
        raise AssertionError(f"deployer check failed: option {_UNKNOWN_OPTION} was accepted")


def _expect_deployment(got: Any, deployer: Deployer, name: str, uri: str, call: str) -> None:
    _deployer_ok(got.status == "ready", f"{call} answered status {got.status!r}, not ready")
    answered, wanted = (got.name, got.target, got.model_uri), (name, deployer.name, uri)
    _deployer_ok(answered == wanted, f"{call} answered {answered}, not {wanted}")


def _expect_predictions(
    deployer: Deployer, name: str, uri: str, data: Any, config: Mapping[str, Any]
) -> None:
    from modelpack import deploy, trust

    model = load(uri, trust=trust.parse(config.get("trust")))
    rows = model.input_example() if data is None else data
    _deployer_ok(rows is not None, "the model has no input example: pass data=")
    got = deploy.predict(deployer, name, rows, config)
    expected = model.predict(rows)
    _deployer_ok(_close(got, expected), f"predict answered {got!r}, modelpack.load {expected!r}")


def _close(a: Any, b: Any) -> bool:
    from modelpack.payload import to_jsonable

    a, b = to_jsonable(a), to_jsonable(b)
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_close(a[k], b[k]) for k in a)
        )
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return False
    if x.dtype.kind in "fc" or y.dtype.kind in "fc":
        return bool(np.allclose(x, y, rtol=1e-4, atol=1e-5, equal_nan=True))
    return bool(np.array_equal(x, y))


# -- servers ---------------------------------------------------------------------------------


class _Doubler:
    """The small Predictor ``check_server`` serves by default."""

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        return np.asarray(data, dtype=np.float64) * 2


def check_server(
    server: Server | str,
    predictor: Predictor | None = None,
    signature: Signature | None = None,
    *,
    data: Any = None,
    model_name: str = "model",
    **options: Any,
) -> None:
    """Serve a Predictor with ``server.app`` on uvicorn (127.0.0.1); raise AssertionError
    naming the first route that answers wrongly.

    Without ``predictor`` it serves one that doubles a float tensor. It checks ``/ping``,
    ``/invocations`` (predictions equal the predictor's on ``data``), ``/v2/health/ready``,
    ``/v2/models/{model_name}`` and its ``/infer``. ``options`` go to ``app``.
    """
    import httpx

    from modelpack.payload import encode_example
    from modelpack.signature import infer_signature

    if isinstance(server, str):
        server = plugins.server(server)
    else:
        plugins.check_plugin("server", server, label=repr(server))
    if predictor is None:
        predictor, data = _Doubler(), np.array([[1.0, 2.0], [3.0, 4.0]])
        signature = infer_signature(data, predictor.predict(data))
    _server_ok(data is not None, "pass data= with a predictor of your own")
    expected = predictor.predict(data)
    with _uvicorn(server.app(predictor, signature, **options)) as url, httpx.Client() as http:
        _server_ok(_ready(http, url + "/ping"), "/ping did not answer 200")
        answer = http.post(url + "/invocations", json=encode_example(data), timeout=30)
        _server_ok(answer.status_code == 200, f"/invocations: {answer.status_code}")
        got = answer.json().get("predictions")
        _server_ok(_close(got, expected), f"/invocations answered {got!r}")
        ready = http.get(url + "/v2/health/ready", timeout=30)
        _server_ok(ready.status_code == 200, f"/v2/health/ready: {ready.status_code}")
        model = http.get(f"{url}/v2/models/{model_name}", timeout=30)
        _server_ok(model.status_code == 200, f"/v2/models/{model_name}: {model.status_code}")
        body = {"inputs": _v2_inputs(data, model.json().get("inputs") or [])}
        infer = http.post(f"{url}/v2/models/{model_name}/infer", json=body, timeout=30)
        _server_ok(infer.status_code == 200, f"v2 infer: {infer.status_code} {infer.text}")
        outputs = infer.json().get("outputs") or []
        _server_ok(bool(outputs), "v2 infer answered no outputs")
        if len(outputs) == 1:
            out = np.asarray(outputs[0]["data"]).reshape(outputs[0]["shape"])
            _server_ok(_close(out, expected), f"v2 infer answered {out!r}")


_V2_TYPES = {
    "float64": "FP64",
    "float32": "FP32",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
}


def _v2_inputs(data: Any, declared: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if hasattr(data, "columns"):  # a DataFrame: one input per column
        columns = {str(c): data[c].to_numpy() for c in data.columns}
    elif isinstance(data, Mapping):
        columns = {str(k): np.asarray(v) for k, v in data.items()}
    else:
        name = declared[0]["name"] if declared else "input-0"
        columns = {name: np.asarray(data)}
    return [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": _V2_TYPES.get(array.dtype.name, "BYTES"),
            "data": array.ravel().tolist(),
        }
        for name, array in columns.items()
    ]


def _ready(http: Any, url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http.get(url, timeout=10).status_code == 200:
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn on 127.0.0.1 in a thread; its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            _server_ok(thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
