"""The kubernetes target's ``-C key=value`` options, checked and typed once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack import trust
from modelpack.deploy import check_options, option_bool
from modelpack.errors import InvalidInputError

OPTIONS = {
    "image": "image serving the model (from `modelpack build-image`, pushed where the cluster "
    "pulls from); required to create or update",
    "namespace": "namespace (default: the kubeconfig context's, else default)",
    "kubeconfig": "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)",
    "context": "kubeconfig context (default: the current one)",
    "replicas": "replicas when there is no autoscaler (default: 1)",
    "min_replicas": "autoscaler minimum (default: 1)",
    "max_replicas": "autoscaler maximum; 0 renders no HorizontalPodAutoscaler (default: 3)",
    "target_cpu": "autoscaler target CPU utilization in percent (default: 80)",
    "cpu": "CPU request (default: 500m)",
    "memory": "memory request (default: 1Gi)",
    "cpu_limit": "CPU limit (default: none)",
    "memory_limit": "memory limit (default: the memory request)",
    "gpu": "NVIDIA GPUs per pod, as nvidia.com/gpu limits (default: 0)",
    "node_selector": "node labels as key=value[,key=value] (default: none)",
    "scheduler_name": "scheduler for the pods (default: the cluster's)",
    "model_source": "image (baked in), fetch (an init container fetches the model into the pod: "
    "`modelpack pull` for oci://, the registry and artifact store for models:/, runs:/, s3://) "
    "or kserve (KServe's storage fetches it: STORAGE_URI, with kserve=true); default: fetch "
    "for an oci:// model, else image",
    "registry_secret": "Secret of type kubernetes.io/dockerconfigjson (as imagePullSecrets use) "
    "holding the credentials the init container pulls an oci:// model with (default: none)",
    "registry_insecure": "plain HTTP to the oci:// model's registry (default: false)",
    "env": "extra environment for the server (and the fetching init container) as "
    "KEY=VALUE[,KEY=VALUE], e.g. MODELPACK_STORE_URI and MODELPACK_ARTIFACT_URI",
    "service_type": "ClusterIP (default), NodePort or LoadBalancer",
    "service_port": "port of the Service (default: 80)",
    "workers": "server processes per pod (default: 1)",
    "image_pull_policy": "IfNotPresent (default), Always or Never",
    "kserve": "render a KServe InferenceService instead of Deployment/Service/HPA (default: false)",
    "trust": "what the server may run when it loads the model: true (everything) or NAME[,NAME] "
    "exact types/classes; written into the container's args (default: nothing)",
    "lazy": "many models: load each model on its first request [default: false]",
    "max_memory": "many models: budget for the models loaded at once (bytes, 500MB, 2GB, 1GiB); "
    "the least recently used are unloaded to make room [default: none]",
    "follow_aliases": "many models: the server polls the registry every SECONDS and switches a "
    "models:/NAME@ALIAS model when its alias moves (such a model is then loaded by the server, "
    "not fetched by an init container) [default: off]",
    "model_config": "many models: YAML file of per-model settings (max_batch_size, ...; "
    "docs/serving.md), rendered as a ConfigMap the server reads [default: none]",
    "model": "predict: the model (by name) of a many-models deployment that answers",
}
# The options of a many-models deployment (a model set), as `modelpack serve` takes them.
MODEL_SET_OPTIONS = ("lazy", "max_memory", "follow_aliases", "model_config")

MODEL_SOURCES = ("image", "fetch", "kserve")
# What a pod resolves itself (the registry and artifact store, S3, an OCI registry).
REMOTE_SCHEMES = ("models:", "runs:", "s3:", "oci:")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")
# RFC 1123 label: what Deployment and Service names must be.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# RFC 1123 subdomain: what Secret names must be.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _int(key: str, value: Any, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"option {key}={value!r} is not an integer") from None
    if number < minimum or isinstance(value, bool):
        raise InvalidInputError(f"option {key}={value!r} must be an integer >= {minimum}")
    return number


def _quantity(key: str, value: Any) -> str:
    text = str(value).strip()
    if not _QUANTITY.match(text):
        raise InvalidInputError(
            f"option {key}={value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)"
        )
    return text


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value)
    if text not in choices:
        raise InvalidInputError(f"option {key}={value!r}: choose one of {', '.join(choices)}")
    return text


def _pairs(key: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for part in str(value).split(","):
        k, sep, v = part.strip().partition("=")
        if not sep or not k:
            raise InvalidInputError(f"option {key}: {part!r} is not KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInputError(
            f"deployment name {name!r} is not a valid Kubernetes name: lower-case letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def _secret_name(key: str, value: Any) -> str:
    text = str(value)
    if len(text) > 253 or not _SUBDOMAIN.match(text):
        raise InvalidInputError(
            f"option {key}={value!r} is not a Secret name (lower-case letters, digits, '-' and '.')"
        )
    return text


def _size(key: str, value: Any) -> str:
    from modelpack.cli.serve_commands import parse_size  # what the server reads it with

    try:
        parse_size(str(value))
    except InvalidInputError as exc:
        raise InvalidInputError(f"option {key}: {exc.message}") from None
    return str(value).strip()


def _seconds(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not 0.1 <= number <= 1e6:
        raise InvalidInputError(f"option {key}={value!r}: give seconds between 0.1 and 1000000")
    return number


def _model_config(value: Any) -> dict[str, Any]:
    """The per-model settings, from a YAML file (checked as `serve --model-config` reads it) or
    already a mapping (as a deployment stores them, so an update needs no file)."""
    import yaml

    if isinstance(value, Mapping):
        loaded: Any = dict(value)
        where = "its value"
    else:
        path = Path(str(value)).expanduser()
        where = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInputError(f"option model_config: {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise InvalidInputError(
                f"option model_config: {path} is not valid YAML: {first}"
            ) from None
    from modelpack.servers.http._sources import model_config  # as the server reads it

    checked = model_config(loaded, f"option model_config ({where})")
    for name, settings in checked.items():
        uri = str(settings.get("uri", ""))
        if uri and not uri.startswith(REMOTE_SCHEMES):
            raise InvalidInputError(
                f"option model_config ({where}): {name}: uri {uri!r} is not a URI the pod "
                "can reach (models:/, runs:/, s3:// or oci://)"
            )
    return checked


@dataclass(frozen=True)
class Settings:
    image: str | None = None
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 3
    target_cpu: int = 80
    cpu: str = "500m"
    memory: str = "1Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    gpu: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    scheduler_name: str | None = None
    model_source: str | None = None  # None: source() picks by the model URI
    registry_secret: str | None = None
    registry_insecure: bool = False
    env: dict[str, str] = field(default_factory=dict)
    service_type: str = "ClusterIP"
    service_port: int = 80
    workers: int = 1
    image_pull_policy: str = "IfNotPresent"
    kserve: bool = False
    trust: bool | list[str] | None = None
    lazy: bool = False
    max_memory: str | None = None
    follow_aliases: float | None = None
    model_config: dict[str, Any] | None = None  # per model name, its settings

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, predict: bool = False) -> Settings:
        check_options("kubernetes", OPTIONS, config)
        if "model" in config and not predict:
            raise InvalidInputError("option model applies to predict only")
        c = config
        settings = cls(
            image=str(c["image"]) if c.get("image") else None,
            namespace=str(c["namespace"]) if c.get("namespace") else None,
            kubeconfig=str(c["kubeconfig"]) if c.get("kubeconfig") else None,
            context=str(c["context"]) if c.get("context") else None,
            replicas=_int("replicas", c.get("replicas", 1), 1),
            min_replicas=_int("min_replicas", c.get("min_replicas", 1), 1),
            max_replicas=_int("max_replicas", c.get("max_replicas", 3)),
            target_cpu=_int("target_cpu", c.get("target_cpu", 80), 1),
            cpu=_quantity("cpu", c.get("cpu", "500m")),
            memory=_quantity("memory", c.get("memory", "1Gi")),
            cpu_limit=_quantity("cpu_limit", c["cpu_limit"]) if c.get("cpu_limit") else None,
            memory_limit=(
                _quantity("memory_limit", c["memory_limit"]) if c.get("memory_limit") else None
            ),
            gpu=_int("gpu", c.get("gpu", 0)),
            node_selector=_pairs("node_selector", c["node_selector"])
            if c.get("node_selector")
            else {},
            scheduler_name=str(c["scheduler_name"]) if c.get("scheduler_name") else None,
            model_source=(
                _choice("model_source", c["model_source"], MODEL_SOURCES)
                if c.get("model_source")
                else None
            ),
            registry_secret=(
                _secret_name("registry_secret", c["registry_secret"])
                if c.get("registry_secret")
                else None
            ),
            registry_insecure=option_bool("registry_insecure", c.get("registry_insecure", False)),
            env=_pairs("env", c["env"]) if c.get("env") else {},
            service_type=_choice("service_type", c.get("service_type", "ClusterIP"), SERVICE_TYPES),
            service_port=_int("service_port", c.get("service_port", 80), 1),
            workers=_int("workers", c.get("workers", 1), 1),
            image_pull_policy=_choice(
                "image_pull_policy", c.get("image_pull_policy", "IfNotPresent"), PULL_POLICIES
            ),
            kserve=option_bool("kserve", c.get("kserve", False)),
            trust=trust.parse(c.get("trust")),
            lazy=option_bool("lazy", c.get("lazy", False)),
            max_memory=_size("max_memory", c["max_memory"]) if c.get("max_memory") else None,
            follow_aliases=(
                _seconds("follow_aliases", c["follow_aliases"])
                if c.get("follow_aliases") is not None
                else None
            ),
            model_config=_model_config(c["model_config"]) if c.get("model_config") else None,
        )
        if settings.max_replicas and settings.max_replicas < settings.min_replicas:
            raise InvalidInputError(
                f"option max_replicas={settings.max_replicas} is below "
                f"min_replicas={settings.min_replicas}"
            )
        return settings

    def source(self, model_uri: str) -> str:
        """Where the pod gets the model: the option, else fetch for oci://, else image."""
        if self.model_source:
            return self.model_source
        return "fetch" if model_uri.startswith("oci:") else "image"

    def require_image(self) -> str:
        if not self.image:
            raise InvalidInputError(
                "option image is required: build one with `modelpack build-image MODEL_URI -t "
                "TAG`, push it where the cluster pulls from, then pass -C image=TAG"
            )
        return self.image
