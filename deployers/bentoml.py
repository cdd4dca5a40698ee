"""BentoML: the model exported as a Bento (a service wrapping ``modelpack.load``), built with
``bentoml build``; serve it with ``bentoml serve NAME:latest``. See docs/deploy/bentoml.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

from modelpack import trust
from modelpack.deploy import Deployment, Plan, check_options
from modelpack.errors import DeploymentError, MissingDependencyError

OPTIONS = {
    "build_dir": "where the Bento's source is written (default: MODELPACK_HOME/bentos/NAME)",
    "url": "predict: base URL of the served Bento (e.g. http://127.0.0.1:3000)",
    "predict_timeout": "predict: seconds to wait for the answer (default: 300)",
    "trust": "what the Bento may run when it loads the model: true (everything) or NAME[,NAME] "
    "exact types/classes; written into its service.py (default: nothing)",
}
LABEL = "modelpack-model-uri"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def _bentoml(*args: str, cwd: Path | None = None) -> str:
    exe = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which("bentoml")
    if exe is None:
        raise MissingDependencyError(
            "the bentoml target needs BentoML: pip install 'modelpack[bentoml]'", package="bentoml"
        )
    proc = subprocess.run(
        [exe, *args, "--do-not-track"], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line]
        raise DeploymentError(f"bentoml {args[0]} failed: {lines[-1] if lines else 'no output'}")
    return proc.stdout


def _build_dir(name: str, config: Mapping[str, Any]) -> Path:
    if config.get("build_dir"):
        return Path(str(config["build_dir"])).expanduser()
    from modelpack.store.db import home

    return home() / "bentos" / name


class BentoMLDeployer:
    """``-t bentoml``: see OPTIONS for the ``-C`` keys."""

    name = "bentoml"
    options: Mapping[str, str] = OPTIONS

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Plan:
        check_options(self.name, OPTIONS, config)
        _check_name(name)
        from modelpack.uris import resolve

        model_dir = resolve(model_uri)
        root = _build_dir(name, config)
        return Plan(
            target=self.name,
            name=name,
            model_uri=str(model_uri),
            actions=[
                f"write {root / 'service.py'}",
                f"write {root / 'bentofile.yaml'}",
                f"copy {model_dir} -> {root / 'model'}",
                f"bentoml build {root} (bento {name}, label {LABEL}={model_uri})",
            ],
            documents=[_bentofile(name, str(model_uri))],
        )

    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        self.plan(name, model_uri, config)
        from modelpack.uris import resolve

        model_dir = resolve(model_uri)
        root = _build_dir(name, config)
        staging = root.with_name(f".{root.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(model_dir, staging / "model")
            template = resources.files("modelpack.deployers") / "bentoml_service.py.tmpl"
            service = Template(template.read_text(encoding="utf-8"))
            (staging / "service.py").write_text(
                service.substitute(
                    service_name=json.dumps(name),
                    trust=repr(trust.parse(config.get("trust"))),
                ),
                encoding="utf-8",
            )
            (staging / "bentofile.yaml").write_text(
                yaml.safe_dump(_bentofile(name, str(model_uri)), sort_keys=False), encoding="utf-8"
            )
            shutil.rmtree(root, ignore_errors=True)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # bentoml refuses a bentofile outside its working directory: build from inside.
        tag = _bentoml("build", ".", "--output", "tag", cwd=root).strip().splitlines()[-1]
        return self.get(tag.removeprefix("__tag__:").split(":")[0], config)

    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        return self.create(name, model_uri, config)  # a new version of the Bento

    def delete(self, name: str, config: Mapping[str, Any]) -> None:
        check_options(self.name, OPTIONS, config)
        self.get(name, config)
        _bentoml("delete", name, "--yes")
        shutil.rmtree(_build_dir(name, config), ignore_errors=True)

    def get(self, name: str, config: Mapping[str, Any]) -> Deployment:
        check_options(self.name, OPTIONS, config)
        try:
            info = json.loads(_bentoml("get", f"{name}:latest", "-o", "json"))
        except DeploymentError as exc:
            raise DeploymentError(f"no Bento named {name!r}: {exc}") from None
        return _deployment(name, info, config)

    def list(self, config: Mapping[str, Any]) -> list[Deployment]:
        check_options(self.name, OPTIONS, config)
        found = json.loads(_bentoml("list", "-o", "json") or "[]")
        names = sorted({str(b["tag"]).split(":")[0] for b in found})
        deployments = [self.get(n, config) for n in names]
        return [d for d in deployments if d.details.get("modelpack")]

    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any:
        check_options(self.name, OPTIONS, config)
        url = config.get("url") or os.environ.get("MODELPACK_BENTOML_URL")
        if not url:
            raise DeploymentError(
                f"where is {name} served? start it with `bentoml serve {name}:latest` and pass "
                "-C url=http://HOST:PORT"
            )
        from modelpack.deployers.sagemaker._deployer import _body

        request = urllib.request.Request(
            f"{str(url).rstrip('/')}/predict",
            data=_body(data),
            headers={"Content-Type": "application/json"},
        )
        timeout = float(config.get("predict_timeout", 300))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = " ".join(exc.read().decode(errors="replace").split())[:300]
            raise DeploymentError(f"the Bento at {url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeploymentError(f"cannot reach the Bento at {url}: {reason}") from None
        return answer.get("predictions", answer) if isinstance(answer, dict) else answer


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise DeploymentError(
            f"{name!r} is not a valid Bento name: use lowercase letters, digits, '.', '_' and "
            "'-', starting and ending with a letter or digit"
        )


def _bentofile(name: str, model_uri: str) -> dict[str, Any]:
    return {
        "service": "service:ModelpackService",
        "name": name,
        "labels": {LABEL: model_uri, "modelpack-deployment": name},
        "include": ["service.py", "model/**"],
        # The model's pinned requirements (modelpack included); nothing is locked at build time.
        "python": {"requirements_txt": "model/requirements.txt", "lock_packages": False},
    }


def _deployment(name: str, info: Mapping[str, Any], config: Mapping[str, Any]) -> Deployment:
    labels = info.get("labels") or {}
    url = config.get("url")
    return Deployment(
        name=name,
        target="bentoml",
        model_uri=str(labels.get(LABEL, "")),
        # A built Bento is ready to serve (`bentoml serve`) or containerize.
        status="ready",
        endpoint=f"{str(url).rstrip('/')}/predict" if url else None,
        details={
            "bento": str(info.get("tag") or f"{name}:{info.get('version', '')}"),
            "created_at": str(info.get("creation_time", "")),
            "modelpack": LABEL in labels,
        },
    )
