"""The ``local`` target: ``modelpack serve`` as a detached process on this machine.

State lives in ``$MODELPACK_HOME/deployments/TARGET/NAME.json``. ``runtime=onnx`` serves the
model's onnx flavor on ONNX Runtime, converting the model first when it has none (the ``onnx``
target is this deployer with that preset).

``update`` is blue/green and never waits: it starts the new model on a second port and records
it as ``pending`` (status ``updating``; the endpoint is still the old server's). ``get`` (which
``modelpack.deploy`` polls) watches the pending server: once it answers ``/ping``, ``get``
switches the state to it, lets clients that read the old endpoint finish for ``DRAIN_S``, then
stops the old server, so no request fails and the endpoint moves (``predict`` follows it). A
pending server that exits is removed by ``get``, which then reports ``failed`` with its log while
the old server keeps serving, until the next update. A second ``update`` replaces a pending one.

A ``ModelSet`` (``modelset:`` URI: ``-m NAME=URI`` repeated, ``--repository``) runs one
many-models server (``modelpack serve -m ... --repository ...``); ready is the server's
readiness (every model loaded or failed), ``get`` lists each model's state, ``predict`` takes
the ``model`` option, and an update to another set is the same blue/green switch.
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
from modelpack.deploy import Deployment, ModelSet, Plan, check_options
from modelpack.deployers import _local_options as local_options
from modelpack.deployers import _process
from modelpack.errors import DeploymentError, InvalidInputError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DRAIN_S = 1.0  # how long the old server keeps answering after the state points elsewhere
# What one server process is: the state's top level (the serving one), ``pending``, ``retired``.
_SERVER_KEYS = (
    "model_uri", "model_path", "options", "generation", "pid", "started", "host", "port",
    "log_file",
)  # fmt: skip


class LocalDeployer:
    """Serves a model with ``modelpack serve`` in a detached process on this machine.

    ``runtime`` presets the runtime (the ``runtime`` option is then not offered) and ``device``
    the default device; ``name`` is the target's name (and its state directory).
    """

    local_state = True  # deployments live on this machine: listing them is local

    def __init__(
        self, name: str = "local", *, runtime: str | None = None, device: str | None = None
    ) -> None:
        self.name = name
        self.runtime = runtime
        self.device = device or ("auto" if runtime == "onnx" else "cpu")
        self.options: Mapping[str, str] = local_options.described(runtime, self.device)
        # Many models in one server (modelpack.deploy.ModelSet); runtime onnx serves one.
        self.model_sets = runtime != "onnx"

    def __repr__(self) -> str:
        preset = f", runtime={self.runtime!r}" if self.runtime else ""
        return f"LocalDeployer({self.name!r}{preset}, device={self.device!r})"

    # -- Deployer protocol -------------------------------------------------------------------

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Plan:
        options = self._options(name, config, model_uri)
        state = _process.read_state(self._state_file(name))
        generation = 1 if state is None else self._next_generation(state)
        plan = Plan(target=self.name, name=name, model_uri=model_uri)
        if state is None:
            port = options.get("port", "<free port>")
            plan.actions += [
                *self._plan_model(name, model_uri, generation, options),
                f"start: {self._command_line(name, self._shown(model_uri), options, port)}",
                f"write state: {self._state_file(name)}",
                f"log to: {self._log_file(name, 1)}",
            ]
            return plan
        options = self._merged(state, options, config, model_uri)
        port = options.get("port", "<free port>")
        plan.actions += [
            f"update {self.name} deployment {name!r}: {state['model_uri']} -> {model_uri}",
            *self._plan_model(name, model_uri, generation, options),
            f"start: {self._command_line(name, self._shown(model_uri), options, port)}",
            f"once it answers /ping (seen by `get`, which `deploy update` polls), point "
            f"{self._state_file(name)} at it",
            f"stop the old server (PID {state['pid']}, port {state['port']}) "
            f"{DRAIN_S:g} s after the switch",
        ]
        if state.get("pending"):
            plan.actions.append(f"stop the pending server (PID {state['pending']['pid']})")
        return plan

    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        options = self._options(name, config, model_uri)
        with _process.locked(self._lock_file(name)):
            existing = _process.read_state(self._state_file(name))
            if existing is not None:
                status = self._deployment(existing).status
                raise DeploymentError(
                    f"a {self.name} deployment named {name!r} exists (status {status}); "
                    f"change it with `modelpack deploy update -t {self.name} --name {name}` "
                    "or remove it with `modelpack deploy delete`"
                )
            try:
                state = self._start(name, model_uri, options, generation=1)
                state.update(name=name, target=self.name, created_at=_now(), updated_at=None)
                try:
                    _process.write_state(self._state_file(name), state)
                except BaseException:
                    self._teardown(state, name)
                    raise
            except BaseException:
                self._lock_file(name).unlink(missing_ok=True)
                raise
        return self._deployment(state)

    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        new_options = self._options(name, config, model_uri)
        with _process.locked(self._lock_file(name)):
            state = self._require_state(name)
            options = self._merged(state, new_options, config, model_uri)
            pending = self._start(name, model_uri, options, self._next_generation(state))
            pending["requested_at"] = _now()
            superseded = state.get("pending")
            state["pending"] = pending
            state.pop("failed_update", None)
            try:
                _process.write_state(self._state_file(name), state)
            except BaseException:
                self._teardown(pending, name)
                raise
            if superseded is not None:
                self._teardown(superseded, name)
        return self._deployment(state)

    def delete(self, name: str, config: Mapping[str, Any]) -> None:
        self._options(name, config)
        with _process.locked(self._lock_file(name)):
            state = self._require_state(name)
            servers = [state, *state.get("retired", [])]
            if state.get("pending"):
                servers.append(state["pending"])
            for server in servers:
                self._teardown(server, name)
            self._state_file(name).unlink(missing_ok=True)
        self._lock_file(name).unlink(missing_ok=True)

    def get(self, name: str, config: Mapping[str, Any]) -> Deployment:
        self._options(name, config)
        return self._deployment(self._observe(self._require_state(name)))

    def list(self, config: Mapping[str, Any]) -> builtins.list[Deployment]:
        check_options(self.name, self.options, config)
        found = []
        for file in sorted(self._dir().glob("*.json")):
            state = _process.read_state(file)
            if state is not None:
                found.append(self._deployment(self._observe(state)))
        return found

    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any:
        from modelpack.payload import dumps, encode_example

        self._options(name, config, predict=True)
        state = self._observe(self._require_state(name))
        status, details = self._status(state)
        if status != "ready":  # the serving server, whatever an update is doing
            status = self._deployment(state).status
            raise DeploymentError(
                f"{self.name} deployment {name!r} is {status}, not ready{_reason(details)}"
            )
        path = "/invocations" + self._model_route(state, config.get("model"))
        body = dumps(encode_example(data))
        answer = _process.post_json(self._endpoint(state) + path, body, timeout=300)
        return answer["predictions"]

    def _model_route(self, state: Mapping[str, Any], model: Any) -> str:
        """``/NAME`` of the model that answers a many-models deployment's predict; ``""``."""
        if ModelSet.parse(state["model_uri"]) is None:
            if model is not None:
                raise InvalidInputError(
                    f"{self.name} deployment {state['name']!r} serves one model: leave out model"
                )
            return ""
        names = sorted(self._models(state))
        if model is None:
            raise InvalidInputError(
                f"{self.name} deployment {state['name']!r} serves {len(names)} models "
                f"({', '.join(names) or 'none yet'}): name one with --model (-C model=NAME)"
            )
        if str(model) not in names:
            raise InvalidInputError(
                f"{self.name} deployment {state['name']!r} serves no model {model!r} "
                f"(it serves {', '.join(names) or 'none'})"
            )
        return f"/{model}"

    def _models(self, state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Each model of a many-models server: its state (and reason), as its index says."""
        index = _process.post_json(self._endpoint(state) + "/v2/repository/index", b"{}", 10)
        if not isinstance(index, list):
            raise DeploymentError(f"{self._endpoint(state)} answered an index that is not a list")
        return {
            str(row["name"]): {k: row[k] for k in ("state", "version", "reason") if row.get(k)}
            for row in index
        }

    # -- the blue/green switch, driven by get ------------------------------------------------

    def _observe(self, state: dict[str, Any]) -> dict[str, Any]:
        """Finish what an update started, as far as the pending server allows now."""
        pending = state.get("pending")
        if pending is not None:
            status, details = self._status(pending)
            if status == "ready":
                state = self._switch(state["name"], pending["generation"], None) or state
            elif status == "dead":
                state = self._switch(state["name"], pending["generation"], details) or state
        if state.get("retired"):
            state = self._retire(state) or state
        return state

    def _switch(
        self, name: str, generation: int, failure: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """Make the pending server the serving one, or drop it when it exited (``failure``)."""
        with _process.locked(self._lock_file(name)):
            state = _process.read_state(self._state_file(name))
            pending = (state or {}).get("pending")
            if state is None or pending is None or pending["generation"] != generation:
                return state  # someone else switched, or it was deleted
            del state["pending"]
            if failure is not None:
                self._teardown(pending, name)
                state["failed_update"] = {
                    "model_uri": pending["model_uri"],
                    "reason": failure.get("reason", "the new server exited"),
                    "at": _now(),
                }
            else:
                old = {key: state.get(key) for key in _SERVER_KEYS}
                state.update({key: pending[key] for key in _SERVER_KEYS}, updated_at=_now())
                retired = state.setdefault("retired", [])
                retired.append({**old, "stop_after": time.time() + DRAIN_S})
            _process.write_state(self._state_file(name), state)
            return state

    def _retire(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Stop the servers an update replaced, once clients had ``DRAIN_S`` to move on."""
        name, stopped = state["name"], set()
        for server in state["retired"]:
            time.sleep(min(DRAIN_S, max(0.0, server["stop_after"] - time.time())))
            self._teardown(server, name)
            stopped.add(server["generation"])
        with _process.locked(self._lock_file(name)):
            current = _process.read_state(self._state_file(name))
            if current is None:
                return None
            kept = [s for s in current.get("retired", []) if s["generation"] not in stopped]
            current["retired"] = kept
            if not kept:
                del current["retired"]
            _process.write_state(self._state_file(name), current)
            return current

    # -- runtime (native or onnx) ------------------------------------------------------------

    def _runtime(self, options: Mapping[str, Any]) -> str:
        return self.runtime or str(options.get("runtime", "native"))

    def _plan_model(
        self, name: str, model_uri: str, generation: int, options: Mapping[str, Any]
    ) -> builtins.list[str]:
        from modelpack.deployers import _onnx_runtime as onnx

        model_set = ModelSet.parse(model_uri)
        if model_set is not None:
            return [f"serve {line}" for line in self._local_set(model_set).describe()]
        path = self._resolve(model_uri)
        if self._runtime(options) != "onnx":
            return [f"serve the model at {path}"]
        if onnx.has_onnx(path):
            return [f"serve the onnx flavor of the model at {path}"]
        return [
            f"convert {model_uri} to ONNX (parity gate) into {self._model_dir(name, generation)}",
            "serve the converted model",
        ]

    def _prepare_model(
        self, name: str, model_uri: str, generation: int, options: Mapping[str, Any]
    ) -> Path | ModelSet:
        from modelpack.deployers import _onnx_runtime as onnx

        model_set = ModelSet.parse(model_uri)
        if model_set is not None:
            return self._local_set(model_set)
        path = self._resolve(model_uri)
        if self._runtime(options) != "onnx" or onnx.has_onnx(path):
            return path
        return onnx.convert(
            path,
            self._model_dir(name, generation),
            rtol=float(options.get("rtol", 1e-4)),
            atol=float(options.get("atol", 1e-5)),
            granted=trust.parse(options.get("trust")),  # converting loads the source model
        )

    def _shown(self, model_uri: str) -> str | ModelSet:
        """What a plan's command line serves: the set's models, or ``<model>`` (a path that
        only a conversion may decide)."""
        model_set = ModelSet.parse(model_uri)
        return "<model>" if model_set is None else self._local_set(model_set)

    def _local_set(self, model_set: ModelSet) -> ModelSet:
        """The set with its local paths absolute (the server runs in the state directory);
        a path that is not a model, or a repository folder that does not exist, is refused.
        A ``models:/`` or ``oci://`` repository goes to the server as it is: it reads the
        registry (or the OCI registry's catalog) itself."""
        models = {
            name: uri if _has_scheme(uri) else str(self._resolve(uri))
            for name, uri in model_set.models.items()
        }
        repository = model_set.repository
        if repository and not repository.startswith(("models:", "oci://")):
            folder = Path(repository.removeprefix("file://")).expanduser().resolve()
            if not folder.is_dir():
                raise InvalidInputError(f"--repository {repository}: no such folder")
            repository = str(folder)
        return ModelSet(models, repository, model_set.filter, model_set.alias)

    def _model_dir(self, name: str, generation: int) -> Path:
        return self._dir() / name / ("model" if generation == 1 else f"model.{generation}")

    def _remove_model(self, server: Mapping[str, Any], name: str) -> None:
        import shutil

        if not server.get("model_path"):
            return  # a model set: the server reads the user's models where they are
        model, home = Path(server["model_path"]), self._dir() / name
        if model.parent == home:  # a copy we converted, never the user's model
            shutil.rmtree(model, ignore_errors=True)
            if home.is_dir() and not any(home.iterdir()):
                home.rmdir()

    def _details(self, state: Mapping[str, Any], ready: bool) -> dict[str, Any]:
        if self._runtime(state["options"]) != "onnx":
            return {}
        details: dict[str, Any] = {"device": state["options"]["device"]}
        if ready:
            metadata = _process.get_json(self._endpoint(state) + "/metadata")
            runtime = (metadata or {}).get("runtime") or {}
            if runtime.get("provider"):
                details["provider"] = runtime["provider"]
        return details

    # -- internals ---------------------------------------------------------------------------

    def _dir(self) -> Path:
        return _process.home() / "deployments" / self.name

    def _state_file(self, name: str) -> Path:
        return self._dir() / f"{name}.json"

    def _lock_file(self, name: str) -> Path:
        return self._dir() / f".{name}.lock"

    def _log_file(self, name: str, generation: int) -> Path:
        return self._dir() / "logs" / f"{name}.{generation}.log"

    def _options(
        self,
        name: str,
        config: Mapping[str, Any],
        model_uri: str | None = None,
        *,
        predict: bool = False,
    ) -> dict[str, Any]:
        """The options of a change to ``model_uri`` (or of a call that changes nothing)."""
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidInputError(
                f"invalid deployment name {name!r}: use letters, digits, '.', '_' and '-' "
                "(at most 63, starting with a letter or digit)"
            )
        check_options(self.name, self.options, config)
        if "model" in config and not predict:
            raise InvalidInputError("option model applies to predict only")
        options = {**local_options.DEFAULTS, "device": self.device, **config}
        options.pop("model", None)
        if self.runtime is not None:
            options["runtime"] = self.runtime
        options = local_options.checked(options)
        if model_uri is None:
            return options
        return local_options.checked_for_set(options, ModelSet.parse(model_uri) is not None)

    def _merged(
        self,
        state: Mapping[str, Any],
        options: Mapping[str, Any],
        config: Mapping[str, Any],
        model_uri: str,
    ) -> dict[str, Any]:
        """An update's options: the deployment's, with what this call gives (the many-models
        options are kept only while the deployment stays a set)."""
        many = ModelSet.parse(model_uri) is not None
        kept = {
            k: v
            for k, v in state["options"].items()
            if many or k not in local_options.MODEL_SET_OPTIONS
        }
        merged = {**kept, **{k: v for k, v in options.items() if k in config}}
        if self.runtime is not None:
            merged["runtime"] = self.runtime
        if "port" not in config or merged.get("port") == state["port"]:
            merged.pop("port", None)  # both servers run at once: a second port
        return local_options.checked_for_set(local_options.checked(merged), many)

    def _next_generation(self, state: Mapping[str, Any]) -> int:
        pending = state.get("pending") or {}
        return int(max(state["generation"], pending.get("generation", 0))) + 1

    def _resolve(self, model_uri: str) -> Path:
        from modelpack.uris import resolve

        return resolve(model_uri).resolve()

    def _command_line(
        self, name: str, model: str | ModelSet, options: Mapping[str, Any], port: object
    ) -> str:
        return " ".join(["modelpack", *self._serve_args(name, model, options, port)[3:]])

    def _serve_args(
        self, name: str, model: str | ModelSet, options: Mapping[str, Any], port: object
    ) -> builtins.list[str]:
        device = str(options["device"])
        if device == "auto":  # resolved when the server starts; only a plan shows it unresolved
            from modelpack.deployers import _onnx_runtime as onnx

            device = onnx.resolve_device(device)
        if isinstance(model, ModelSet):
            models = _set_args(model, options)
        else:
            models = [model, "--workers", str(options["workers"]), "--name", name]
        return [
            sys.executable, "-m", "modelpack", "serve", *models,
            "--host", str(options["host"]),
            "--port", str(port),
            "--max-batch-size", str(options["max_batch_size"]),
            "--max-latency-ms", str(options["max_latency_ms"]),
            "--runtime", self._runtime(options),
            "--device", device,
            *trust.cli_args(trust.parse(options.get("trust"))),
        ]  # fmt: skip

    def _start(
        self, name: str, model_uri: str, options: dict[str, Any], generation: int
    ) -> dict[str, Any]:
        """Start one server; its record (``_SERVER_KEYS``) for the state file."""
        host = str(options["host"])
        if "port" in options:
            _process.check_port_free(host, options["port"])
        if self._runtime(options) == "onnx":  # decided once per server: the state records it
            from modelpack.deployers import _onnx_runtime as onnx

            options = {**options, "device": onnx.resolve_device(str(options["device"]))}
        path = self._prepare_model(name, model_uri, generation, options)
        server: dict[str, Any] = {
            "model_uri": model_uri,
            "model_path": str(path) if isinstance(path, Path) else None,
            "options": {k: v for k, v in options.items() if k != "port"},
            "generation": generation,
        }
        try:
            port = options["port"] if "port" in options else _process.free_port(host)
            log_file = self._log_file(name, generation)
            log_file.unlink(missing_ok=True)
            args = self._serve_args(
                name, path if isinstance(path, ModelSet) else str(path), options, port
            )
            pid, started = _process.spawn(args, log_file, cwd=self._dir())
        except BaseException:
            self._remove_model(server, name)
            raise
        if "port" in options:
            server["options"]["port"] = port
        server.update(pid=pid, started=started, host=host, port=port, log_file=str(log_file))
        return server

    def _teardown(self, server: Mapping[str, Any], name: str) -> None:
        _process.stop(server["pid"], server.get("started"))
        self._remove_model(server, name)
        Path(server["log_file"]).unlink(missing_ok=True)

    def _require_state(self, name: str) -> dict[str, Any]:
        state = _process.read_state(self._state_file(name))
        if state is None:
            raise DeploymentError(
                f"no {self.name} deployment named {name!r} (see `modelpack deploy list "
                f"-t {self.name}`)"
            )
        return state

    def _endpoint(self, server: Mapping[str, Any]) -> str:
        host = server["host"]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{host}:{server['port']}"

    def _status(self, server: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if not _process.alive(server["pid"], server.get("started")):
            tail = _process.log_tail(Path(server["log_file"]))
            return "dead", {"reason": f"the server process exited: {tail or 'no output'}"}
        if _process.ping(self._endpoint(server)):
            return "ready", {}
        return "starting", {}

    def _deployment(self, state: Mapping[str, Any]) -> Deployment:
        serving, details = self._status(state)
        keys = ("pid", "port", "host", "model_path", "log_file", "created_at", "updated_at")
        details.update({k: state.get(k) for k in keys}, options=state["options"])
        details.update(self._details(state, serving == "ready"))
        if serving == "ready" and ModelSet.parse(state["model_uri"]) is not None:
            try:
                details["models"] = self._models(state)
            except DeploymentError as exc:  # e.g. draining: the status says the rest
                details["models"] = f"unknown ({exc.message})"
        pending, failed = state.get("pending"), state.get("failed_update")
        status = {"ready": "ready", "starting": "creating", "dead": "dead"}[serving]
        if pending is not None:
            status = "updating"
            details["updating_to"] = {k: pending[k] for k in ("model_uri", "pid", "port")}
        elif failed is not None and serving != "dead":
            status = "failed"
            details["reason"] = (
                f"the update to {failed['model_uri']} failed: {failed['reason']}; "
                f"the old one keeps serving {state['model_uri']}"
            )
        return Deployment(
            name=state["name"],
            target=self.name,
            model_uri=state["model_uri"],
            status=status,
            endpoint=self._endpoint(state),
            details=details,
        )


def _set_args(model_set: ModelSet, options: Mapping[str, Any]) -> builtins.list[str]:
    """``modelpack serve``'s arguments for a model set and the many-models options."""
    args = [arg for name, uri in model_set.models.items() for arg in ("-m", f"{name}={uri}")]
    for flag, value in (
        ("--repository", model_set.repository),
        ("--filter", model_set.filter),
        ("--alias", model_set.alias),
        ("--max-memory", options.get("max_memory")),
        ("--follow-aliases", options.get("follow_aliases")),
        ("--model-config", options.get("model_config")),
    ):
        if value is not None:
            args += [flag, str(value)]
    return [*args, "--lazy"] if options.get("lazy") else args


def _has_scheme(uri: str) -> bool:
    """A URI with a scheme (models:/, s3://, oci://...) is resolved by the server itself."""
    head, sep, _ = uri.partition(":")
    return bool(sep) and len(head) > 1 and head.replace("+", "").isalnum()


def _reason(details: Mapping[str, Any] | None) -> str:
    return f": {details['reason']}" if details and details.get("reason") else ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
