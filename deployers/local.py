"""The ``local`` target: ``modelpack serve`` as a detached process on this machine.

State lives in ``$MODELPACK_HOME/deployments/local/NAME.json``. ``update`` starts the new model
on a second port, waits until it answers ``/ping``, switches the state to it, lets clients that
read the old endpoint finish, then stops the old server: no request fails, and the endpoint
moves (``get`` tells the new one; ``predict`` follows it).
"""

from __future__ import annotations

import builtins
import re
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelpack import trust
from modelpack.deploy import READY_TIMEOUT, Deployment, Plan, check_options
from modelpack.deployers import _process
from modelpack.errors import DeploymentError, InvalidInputError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DRAIN_S = 1.0  # how long the old server keeps answering after the state points elsewhere
DEFAULT_READY_TIMEOUT = 300.0

_INT_OPTIONS = {"port": (1, 65535), "workers": (1, 1024), "max_batch_size": (0, 1 << 20)}
_DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "workers": 1,
    "max_batch_size": 0,
    "max_latency_ms": 5.0,
    "runtime": "native",
    "device": "cpu",
}


class LocalDeployer:
    """Serves a model with ``modelpack serve`` in a detached process on this machine."""

    name = "local"
    options: dict[str, str] = {
        "port": "port to bind [default: a free one; update moves to a new one]",
        "host": "interface to bind [default: 127.0.0.1]",
        "workers": "server processes, each with the model [default: 1]",
        "max_batch_size": "rows per merged predict call; 0 turns batching off [default: 0]",
        "max_latency_ms": "longest wait for a batch to fill [default: 5]",
        "runtime": "native (the model's flavor) or onnx (its onnx flavor) [default: native]",
        "device": "cpu, cuda or cuda:N [default: cpu]",
        "trust": "what the server may run when it loads the model: true (everything) or "
        "NAME[,NAME] exact types/classes; written into its command line [default: nothing]",
        READY_TIMEOUT: "seconds update waits for the new server before keeping the old one",
    }

    # -- Deployer protocol -------------------------------------------------------------------

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Plan:
        options = self._options(name, config)
        state = _process.read_state(self._state_file(name))
        model = self._plan_model(name, model_uri, 1 if state is None else state["generation"] + 1)
        plan = Plan(target=self.name, name=name, model_uri=model_uri)
        port = options.get("port", "<free port>")
        if state is None:
            plan.actions += [
                *model,
                f"start: {self._command_line(name, '<model>', options, port)}",
                f"write state: {self._state_file(name)}",
                f"log to: {self._log_file(name, 1)}",
            ]
        else:
            options = {**state["options"], **{k: v for k, v in options.items() if k in config}}
            port = options["port"] if "port" in config else "<free port>"
            plan.actions += [
                f"update {self.name} deployment {name!r}: {state['model_uri']} -> {model_uri}",
                *model,
                f"start: {self._command_line(name, '<model>', options, port)}",
                f"wait until it answers /ping, then point {self._state_file(name)} at it",
                f"stop the old server (PID {state['pid']}, port {state['port']}) "
                f"after {DRAIN_S:g} s",
            ]
        return plan

    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        options = self._options(name, config)
        with _process.locked(self._lock_file(name)):
            existing = _process.read_state(self._state_file(name))
            if existing is not None:
                status = self._status(existing)[0]
                raise DeploymentError(
                    f"a {self.name} deployment named {name!r} exists (status {status}); "
                    f"change it with `modelpack deploy update -t {self.name} --name {name}` "
                    "or remove it with `modelpack deploy delete`"
                )
            try:
                state = self._start(name, model_uri, options, generation=1)
                try:
                    _process.write_state(self._state_file(name), state)
                except BaseException:
                    self._teardown(state)
                    raise
            except BaseException:
                self._lock_file(name).unlink(missing_ok=True)
                raise
        return self._deployment(state)

    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        new_options = self._options(name, config)
        timeout = float(config.get(READY_TIMEOUT, DEFAULT_READY_TIMEOUT))
        with _process.locked(self._lock_file(name)):
            old = self._require_state(name)
            given = {k: v for k, v in new_options.items() if k in config}
            options = {**old["options"], **given}
            if "port" not in config or options["port"] == old["port"]:
                options.pop("port", None)  # both servers run at once: a second port
            state = self._start(name, model_uri, options, generation=old["generation"] + 1)
            try:
                self._wait_ready(state, timeout)
                state["created_at"] = old["created_at"]
                state["updated_at"] = _now()
                _process.write_state(self._state_file(name), state)
            except BaseException:
                self._teardown(state)
                raise
            # Clients that read the old endpoint just before the switch still get answers.
            time.sleep(DRAIN_S)
            self._teardown(old)
        return self._deployment(state)

    def delete(self, name: str, config: Mapping[str, Any]) -> None:
        self._options(name, config)
        with _process.locked(self._lock_file(name)):
            state = self._require_state(name)
            self._teardown(state)
            self._state_file(name).unlink(missing_ok=True)
        self._lock_file(name).unlink(missing_ok=True)

    def get(self, name: str, config: Mapping[str, Any]) -> Deployment:
        self._options(name, config)
        return self._deployment(self._require_state(name))

    def list(self, config: Mapping[str, Any]) -> builtins.list[Deployment]:
        check_options(self.name, self.options, config)
        found = []
        for file in sorted(self._dir().glob("*.json")):
            state = _process.read_state(file)
            if state is not None:
                found.append(self._deployment(state))
        return found

    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any:
        from modelpack.payload import dumps, encode_example

        deployment = self.get(name, config)
        if deployment.endpoint is None or deployment.status != "ready":
            raise DeploymentError(
                f"{self.name} deployment {name!r} is {deployment.status}, not ready"
                + _reason(deployment.details)
            )
        body = dumps(encode_example(data))
        answer = _process.post_json(deployment.endpoint + "/invocations", body, timeout=300)
        return answer["predictions"]

    # -- hooks for targets that serve differently (onnx) -------------------------------------

    def _plan_model(self, name: str, model_uri: str, generation: int) -> builtins.list[str]:
        path = self._resolve(model_uri)
        return [f"serve the model at {path}"]

    def _prepare_model(
        self, name: str, model_uri: str, generation: int, options: Mapping[str, Any]
    ) -> Path:
        return self._resolve(model_uri)

    def _serve_options(self, options: Mapping[str, Any]) -> builtins.list[str]:
        return [
            "--runtime",
            str(options["runtime"]),
            "--device",
            str(options["device"]),
            *trust.cli_args(trust.parse(options.get("trust"))),
        ]

    def _details(self, state: Mapping[str, Any], ready: bool) -> dict[str, Any]:
        return {}

    def _remove_model(self, state: Mapping[str, Any]) -> None:
        pass

    # -- internals ---------------------------------------------------------------------------

    def _dir(self) -> Path:
        return _process.home() / "deployments" / self.name

    def _state_file(self, name: str) -> Path:
        return self._dir() / f"{name}.json"

    def _lock_file(self, name: str) -> Path:
        return self._dir() / f".{name}.lock"

    def _log_file(self, name: str, generation: int) -> Path:
        return self._dir() / "logs" / f"{name}.{generation}.log"

    def _options(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidInputError(
                f"invalid deployment name {name!r}: use letters, digits, '.', '_' and '-' "
                "(at most 63, starting with a letter or digit)"
            )
        check_options(self.name, self.options, config)
        options = {**_DEFAULTS, **{k: v for k, v in config.items() if k != READY_TIMEOUT}}
        for key, (low, high) in _INT_OPTIONS.items():
            if key in options:
                options[key] = _number(key, options[key], int, low, high)
        options["max_latency_ms"] = _number("max_latency_ms", options["max_latency_ms"], float)
        if READY_TIMEOUT in config:
            _number(READY_TIMEOUT, config[READY_TIMEOUT], float)
        if options["runtime"] not in ("native", "onnx"):
            raise InvalidInputError(f"runtime must be native or onnx, got {options['runtime']!r}")
        return options

    def _resolve(self, model_uri: str) -> Path:
        from modelpack.uris import resolve

        return resolve(model_uri).resolve()

    def _command_line(self, name: str, model: str, options: Mapping[str, Any], port: object) -> str:
        return " ".join(["modelpack", *self._serve_args(name, model, options, port)[3:]])

    def _serve_args(
        self, name: str, model: str, options: Mapping[str, Any], port: object
    ) -> builtins.list[str]:
        return [
            sys.executable,
            "-m",
            "modelpack",
            "serve",
            model,
            "--host",
            str(options["host"]),
            "--port",
            str(port),
            "--workers",
            str(options["workers"]),
            "--name",
            name,
            "--max-batch-size",
            str(options["max_batch_size"]),
            "--max-latency-ms",
            str(options["max_latency_ms"]),
            *self._serve_options(options),
        ]

    def _start(
        self, name: str, model_uri: str, options: dict[str, Any], generation: int
    ) -> dict[str, Any]:
        host = str(options["host"])
        if "port" in options:
            _process.check_port_free(host, options["port"])
        path = self._prepare_model(name, model_uri, generation, options)
        state: dict[str, Any] = {
            "name": name,
            "target": self.name,
            "model_uri": model_uri,
            "model_path": str(path),
            "options": {k: v for k, v in options.items() if k != "port"},
            "generation": generation,
        }
        try:
            port = options["port"] if "port" in options else _process.free_port(host)
            log_file = self._log_file(name, generation)
            log_file.unlink(missing_ok=True)
            args = self._serve_args(name, str(path), options, port)
            pid, started = _process.spawn(args, log_file, cwd=self._dir())
        except BaseException:
            self._remove_model(state)
            raise
        if "port" in options:
            state["options"]["port"] = port
        state.update(
            pid=pid, started=started, host=host, port=port, log_file=str(log_file),
            created_at=_now(), updated_at=None,
        )  # fmt: skip
        return state

    def _wait_ready(self, state: Mapping[str, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, details = self._status(state)
            if status == "ready":
                return
            if status == "dead":
                raise DeploymentError(
                    f"the new server of {self.name} deployment {state['name']!r} exited; "
                    f"the old one keeps serving{_reason(details)}"
                )
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"the new server of {self.name} deployment {state['name']!r} was not ready "
                    f"after {timeout:g} s; the old one keeps serving (log: {state['log_file']})"
                )
            time.sleep(0.2)

    def _teardown(self, state: Mapping[str, Any]) -> None:
        _process.stop(state["pid"], state.get("started"))
        self._remove_model(state)
        Path(state["log_file"]).unlink(missing_ok=True)

    def _require_state(self, name: str) -> dict[str, Any]:
        state = _process.read_state(self._state_file(name))
        if state is None:
            raise DeploymentError(
                f"no {self.name} deployment named {name!r} (see `modelpack deploy list "
                f"-t {self.name}`)"
            )
        return state

    def _endpoint(self, state: Mapping[str, Any]) -> str:
        host = state["host"]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{host}:{state['port']}"

    def _status(self, state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if not _process.alive(state["pid"], state.get("started")):
            tail = _process.log_tail(Path(state["log_file"]))
            return "dead", {"reason": f"the server process exited: {tail or 'no output'}"}
        if _process.ping(self._endpoint(state)):
            return "ready", {}
        return "starting", {}

    def _deployment(self, state: Mapping[str, Any]) -> Deployment:
        status, details = self._status(state)
        keys = ("pid", "port", "host", "model_path", "log_file", "created_at", "updated_at")
        details.update({k: state.get(k) for k in keys}, options=state["options"])
        details.update(self._details(state, status == "ready"))
        return Deployment(
            name=state["name"],
            target=self.name,
            model_uri=state["model_uri"],
            status=status,
            endpoint=self._endpoint(state),
            details=details,
        )


def _number(
    key: str, value: Any, kind: type[int] | type[float], low: float = 0, high: float = 1e12
) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"option {key} must be a number, got {value!r}") from None
    if isinstance(value, float) and kind is int and number != value:
        raise InvalidInputError(f"option {key} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise InvalidInputError(f"option {key} must be between {low:g} and {high:g}, got {value!r}")
    return number


def _reason(details: Mapping[str, Any]) -> str:
    return f": {details['reason']}" if details.get("reason") else ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
