"""Manifests of the kubernetes target: Deployment, Service and HorizontalPodAutoscaler, or a KServe
InferenceService. Pure functions of the options: ``plan`` prints exactly what ``create`` applies.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from modelpack import trust
from modelpack._dockerfile import APP_UID, MODEL_DIR, PORT
from modelpack.deploy import ModelSet
from modelpack.deployers.kubernetes._options import Settings

MANAGED_BY = "app.kubernetes.io/managed-by"
DEPLOYMENT_LABEL = "modelpack.dev/deployment"
MODEL_URI_ANNOTATION = "modelpack.dev/model-uri"
SELECTOR = f"{MANAGED_BY}=modelpack"
HPA_VERSIONS = ("autoscaling/v2", "autoscaling/v2beta2")  # 1.20 serves only v2beta2
KSERVE_VERSION = "serving.kserve.io/v1beta1"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
# An oci:// model is pulled into /models/NAME, a new folder in the shared emptyDir: a pull cut
# short leaves no half model there, so the restarted init container starts over cleanly.
MODELS_DIR = "/models"
REGISTRY_AUTH_DIR = "/var/run/secrets/modelpack/registry"  # DOCKER_CONFIG of the pull
KSERVE_MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
SERVER_MODEL_ENV = "MODELPACK_SAGEMAKER_MODEL_DIR"  # what `serve` loads (default MODEL_DIR)
# Many models: the per-model settings (option model_config), a ConfigMap mounted here.
MODEL_CONFIG_DIR = "/etc/modelpack"
MODEL_CONFIG_FILE = "models.yaml"
MODEL_CONFIG_PATH = f"{MODEL_CONFIG_DIR}/{MODEL_CONFIG_FILE}"
MODEL_CONFIG_ANNOTATION = "modelpack.dev/model-config-sha256"  # a new config rolls the pods

# The init container copies the resolved model (registry + artifact store, or S3) into the pod.
_FETCH = (
    "import shutil, sys; from modelpack.uris import resolve; "
    "shutil.copytree(resolve(sys.argv[1]), sys.argv[2], dirs_exist_ok=True)"
)

# The init container pulls an oci:// model with the image's own CLI. A pod whose sandbox is
# recreated runs its init containers again over the same emptyDir: a model pulled before (a
# pull only puts the folder in place once complete) is kept, not pulled into a taken folder.
_PULL = '[ -e "$2" ] && echo "$2 was pulled before" || exec modelpack pull "$@"'


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "model-server",
        MANAGED_BY: "modelpack",
        DEPLOYMENT_LABEL: name,
    }


def _metadata(name: str, namespace: str, model_uri: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(name),
        "annotations": {MODEL_URI_ANNOTATION: model_uri},
    }


def _resources(s: Settings) -> dict[str, Any]:
    limits: dict[str, Any] = {"memory": s.memory_limit or s.memory}
    if s.cpu_limit:
        limits["cpu"] = s.cpu_limit
    if s.gpu:
        limits["nvidia.com/gpu"] = s.gpu  # extended resources: the limit is the request
    return {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": limits}


def _env(s: Settings, extra: dict[str, str] | None = None) -> list[dict[str, str]]:
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(s.workers), **s.env, **(extra or {})}
    return [{"name": k, "value": v} for k, v in env.items()]


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": APP_UID,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _server_container(s: Settings, image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": "model-server",
        "image": image,
        "imagePullPolicy": s.image_pull_policy,
        # the SageMaker contract: 0.0.0.0:8080, model in /opt/ml/model; trust only if given
        "args": ["serve", *trust.cli_args(s.trust)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": _env(s, env),
        "resources": _resources(s),
        # Loading a large model takes a while: the startup probe holds liveness off until then.
        "startupProbe": _probe(LIVE_PATH, period=5, failures=60),
        "readinessProbe": _probe(READY_PATH, period=5, failures=3),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3),
        "securityContext": _security(),
    }


def _pod_spec(s: Settings, image: str, model_uri: str, name: str) -> dict[str, Any]:
    source = s.source(model_uri)
    model_set = ModelSet.parse(model_uri)
    if model_set is not None:
        spec = _model_set_pod(s, image, model_set, name)
    elif source == "fetch" and model_uri.startswith("oci:"):
        spec = _pulled_from_oci(s, image, model_uri, name)
    elif source == "fetch":
        spec = _fetched(s, image, model_uri)
    elif source == "kserve":
        # KServe reads STORAGE_URI on a custom predictor's kserve-container and mounts the
        # model at /mnt/models (an oci:// one through its OCI storage).
        storage = {"STORAGE_URI": model_uri, SERVER_MODEL_ENV: KSERVE_MODEL_DIR}
        spec = {"containers": [_server_container(s, image, storage)]}
    else:
        spec = {"containers": [_server_container(s, image)]}
    if s.node_selector:
        spec["nodeSelector"] = dict(s.node_selector)
    if s.scheduler_name:
        spec["schedulerName"] = s.scheduler_name
    return spec


def _fetched(s: Settings, image: str, model_uri: str) -> dict[str, Any]:
    server = _server_container(s, image)
    mount = {"name": "model", "mountPath": MODEL_DIR}
    server["volumeMounts"] = [mount]
    init = _fetch_init(s, image, model_uri, MODEL_DIR, "fetch-model", mount)
    return {
        "containers": [server],
        "initContainers": [init],
        "volumes": [{"name": "model", "emptyDir": {}}],
    }


def _fetch_init(
    s: Settings, image: str, model_uri: str, target: str, name: str, mount: dict[str, Any]
) -> dict[str, Any]:
    """An init container copying the resolved ``model_uri`` (registry, S3) into ``target``."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["python", "-c", _FETCH, model_uri, target],
        "env": [{"name": k, "value": v} for k, v in s.env.items()],
        "volumeMounts": [dict(mount)],
        "securityContext": _security(),
        # A failed fetch's last line (its error) becomes the termination message `get` reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _pulled_from_oci(s: Settings, image: str, model_uri: str, name: str) -> dict[str, Any]:
    """The image's own ``modelpack pull`` fills an emptyDir the server then loads from."""
    target = f"{MODELS_DIR}/{name}"
    mount: dict[str, Any] = {"name": "models", "mountPath": MODELS_DIR}
    server = _server_container(s, image, {SERVER_MODEL_ENV: target})
    server["volumeMounts"] = [dict(mount)]
    init = _pull_init(s, image, model_uri, target, "pull-model")
    volumes = [{"name": "models", "emptyDir": {}}, *_registry_auth_volumes(s)]
    return {"containers": [server], "initContainers": [init], "volumes": volumes}


def _registry_auth_volumes(s: Settings) -> list[dict[str, Any]]:
    if not s.registry_secret:
        return []
    # The same Secret type as imagePullSecrets: its .dockerconfigjson is a Docker config.
    return [
        {
            "name": "registry-auth",
            "secret": {
                "secretName": s.registry_secret,
                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
            },
        }
    ]


def _pull_init(s: Settings, image: str, model_uri: str, target: str, name: str) -> dict[str, Any]:
    """An init container pulling ``model_uri`` into ``target`` (under the models volume)."""
    env = dict(s.env)
    mounts: list[dict[str, Any]] = [{"name": "models", "mountPath": MODELS_DIR}]
    if s.registry_secret:
        env["DOCKER_CONFIG"] = REGISTRY_AUTH_DIR
        mounts.append({"name": "registry-auth", "mountPath": REGISTRY_AUTH_DIR, "readOnly": True})
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": s.image_pull_policy,
        "command": [
            "sh",
            "-c",
            _PULL,
            name,
            model_uri,
            target,
            *(["--insecure"] if s.registry_insecure else []),
        ],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "volumeMounts": mounts,
        "securityContext": _security(),
        # The pull's one-line error becomes the pod's termination message, which `get` reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


# -- many models in one server ---------------------------------------------------------------


def _container_name(verb: str, model: str, taken: set[str]) -> str:
    """A DNS-label container name for one model's init container, unique within the pod."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    candidate = f"{verb}-{slug}"[:63].rstrip("-")
    number = 2
    while candidate in taken:  # names differing only in case, '_' or '.', or cut at 63
        suffix = f"-{number}"
        candidate = f"{verb}-{slug}"[: 63 - len(suffix)].rstrip("-") + suffix
        number += 1
    taken.add(candidate)
    return candidate


def served_by_uri(model_uri: str, s: Settings) -> bool:
    """Whether the server loads this model of a set by its URI (a ``models:/NAME@ALIAS`` with
    follow_aliases, so it can follow the alias) rather than from what an init container put
    into the pod."""
    from modelpack.servers.http._sources import alias_of  # what the server follows

    return s.follow_aliases is not None and alias_of(model_uri) is not None


def serve_args(model_set: ModelSet, s: Settings) -> list[str]:
    """``modelpack serve``'s arguments in the pod for a model set (after ``serve``)."""
    args: list[str] = []
    for model, uri in model_set.models.items():
        where = uri if served_by_uri(uri, s) else f"{MODELS_DIR}/{model}"
        args += ["-m", f"{model}={where}"]
    for flag, value in (
        ("--repository", model_set.repository),
        ("--filter", model_set.filter),
        ("--alias", model_set.alias),
        ("--max-memory", s.max_memory),
        ("--follow-aliases", None if s.follow_aliases is None else f"{s.follow_aliases:g}"),
        ("--model-config", MODEL_CONFIG_PATH if s.model_config is not None else None),
    ):
        if value is not None:
            args += [flag, value]
    return [*args, "--lazy"] if s.lazy else args


def _model_set_pod(s: Settings, image: str, model_set: ModelSet, name: str) -> dict[str, Any]:
    """One server for every model: each oci:// model pulled and each registry or S3 one fetched
    by an init container of its own into /models/NAME; a repository (models:/) is read by the
    server itself, as is a followed alias."""
    server = _server_container(s, image)
    server["args"] = ["serve", *serve_args(model_set, s), *trust.cli_args(s.trust)]
    mount = {"name": "models", "mountPath": MODELS_DIR}
    inits: list[dict[str, Any]] = []
    taken: set[str] = set()
    for model, uri in model_set.models.items():
        if served_by_uri(uri, s):
            continue
        target = f"{MODELS_DIR}/{model}"
        if uri.startswith("oci:"):
            inits.append(_pull_init(s, image, uri, target, _container_name("pull", model, taken)))
        else:
            inits.append(
                _fetch_init(s, image, uri, target, _container_name("fetch", model, taken), mount)
            )
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if inits:
        mounts.append(dict(mount))
        volumes.append({"name": "models", "emptyDir": {}})
        if any(i["name"].startswith("pull-") for i in inits):
            volumes += _registry_auth_volumes(s)
    if s.model_config is not None:
        mounts.append({"name": "model-config", "mountPath": MODEL_CONFIG_DIR, "readOnly": True})
        volumes.append({"name": "model-config", "configMap": {"name": model_config_name(name)}})
    spec: dict[str, Any] = {"containers": [server]}
    if mounts:
        server["volumeMounts"] = mounts
        spec["volumes"] = volumes
    if inits:
        spec["initContainers"] = inits
    return spec


def model_config_name(name: str) -> str:
    return f"{name}-model-config"


def model_config_text(s: Settings) -> str:
    import yaml

    return yaml.safe_dump(s.model_config or {}, sort_keys=True)


def config_map(name: str, namespace: str, model_uri: str, s: Settings) -> dict[str, Any]:
    """The per-model settings (option model_config) the server reads as --model-config."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**_metadata(name, namespace, model_uri), "name": model_config_name(name)},
        "data": {MODEL_CONFIG_FILE: model_config_text(s)},
    }


def _template_annotations(model_uri: str, s: Settings) -> dict[str, str]:
    annotations = {MODEL_URI_ANNOTATION: model_uri}
    if s.model_config is not None and ModelSet.parse(model_uri) is not None:
        # The mounted ConfigMap changes in place; a new digest rolls the pods onto it.
        digest = hashlib.sha256(model_config_text(s).encode()).hexdigest()
        annotations[MODEL_CONFIG_ANNOTATION] = digest
    return annotations


def deployment(
    name: str, namespace: str, model_uri: str, s: Settings, image: str
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {DEPLOYMENT_LABEL: name}},
        # A rolling change never drops below the serving replicas: the old version serves
        # until the new one is ready.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "progressDeadlineSeconds": 600,
        "template": {
            "metadata": {
                "labels": labels(name),
                # A new model URI (or model set) with the same image still rolls the pods.
                "annotations": _template_annotations(model_uri, s),
            },
            "spec": _pod_spec(s, image, model_uri, name),
        },
    }
    if not s.max_replicas:
        spec["replicas"] = s.replicas  # with an autoscaler, it owns the replica count
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, model_uri),
        "spec": spec,
    }


def service(name: str, namespace: str, model_uri: str, s: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, model_uri),
        "spec": {
            "type": s.service_type,
            "selector": {DEPLOYMENT_LABEL: name},
            "ports": [
                # SSA on 1.20 needs protocol, a key of the ports list.
                {"name": "http", "port": s.service_port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def autoscaler(
    name: str, namespace: str, model_uri: str, s: Settings, api_version: str
) -> dict[str, Any]:
    # autoscaling/v2 and v2beta2 spell a CPU utilization target the same way.
    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(name, namespace, model_uri),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": s.min_replicas,
            "maxReplicas": s.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": s.target_cpu},
                    },
                }
            ],
        },
    }


def inference_service(
    name: str, namespace: str, model_uri: str, s: Settings, image: str
) -> dict[str, Any]:
    pod = _pod_spec(s, image, model_uri, name)
    container = pod["containers"][0]
    container["name"] = "kserve-container"  # the name KServe looks for in a custom predictor
    container.pop("startupProbe")
    container.pop("livenessProbe")  # KServe's queue proxy owns liveness
    predictor: dict[str, Any] = {
        "minReplicas": s.min_replicas,
        "maxReplicas": max(s.max_replicas, s.min_replicas),
        **pod,
    }
    return {
        "apiVersion": KSERVE_VERSION,
        "kind": "InferenceService",
        "metadata": _metadata(name, namespace, model_uri),
        "spec": {"predictor": predictor},
    }


def documents(
    name: str, namespace: str, model_uri: str, s: Settings, image: str, hpa_version: str
) -> list[dict[str, Any]]:
    if s.kserve:
        return [inference_service(name, namespace, model_uri, s, image)]
    docs = [
        deployment(name, namespace, model_uri, s, image),
        service(name, namespace, model_uri, s),
    ]
    if s.max_replicas:
        docs.append(autoscaler(name, namespace, model_uri, s, hpa_version))
    if s.model_config is not None and ModelSet.parse(model_uri) is not None:
        docs.insert(0, config_map(name, namespace, model_uri, s))  # there before the pods
    return docs
