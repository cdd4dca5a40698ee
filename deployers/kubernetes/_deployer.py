"""The ``kubernetes`` target: a Deployment, Service and HorizontalPodAutoscaler (or a KServe
InferenceService) applied with server-side apply, updated and deleted by labels.

``create`` and ``update`` apply the manifests and return; ``get`` reads the rollout's status
(``modelpack.deploy`` polls it). An update whose pods never become ready is left as it is: the
Deployment's rolling strategy (``maxUnavailable: 0``) keeps the old pods serving, ``get``
reports ``updating``, or ``failed`` once its progress deadline passes, and the next
``update`` (or ``kubectl rollout undo``) replaces it.

A ``ModelSet`` (``modelset:`` URI: ``-m NAME=URI`` repeated, ``--repository models:/`` or
``oci://HOST/NAMESPACE``) is one Deployment running one many-models server (``modelpack serve
-m NAME=/models/NAME ...``): each oci:// model pulled and each registry or S3 model fetched by an
init container of its own, a ``models:/`` repository read by the server itself; readiness is the
server's (every model loaded or failed), each model's is ``/v2/models/NAME/ready`` and
``modelpack_model_ready{model}`` in ``/metrics``.

An ``oci://`` repository is read here, on the deploying machine, by each plan, create and
update: every repository of the namespace with the tag becomes an ``oci://HOST/REPO:TAG@DIGEST``
model pinned by its manifest's digest, pulled by an init container as a ``-m`` one is. The
Deployment keeps the set as given; an ``update`` reads the namespace again, so a moved tag (a new
digest in the init container) or a new repository rolls the pods.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import Any

from modelpack.deploy import Deployment, ModelSet, Plan
from modelpack.deployers.kubernetes import _render as render
from modelpack.deployers.kubernetes._cluster import FIELD_MANAGER, Cluster
from modelpack.deployers.kubernetes._options import (
    MODEL_SET_OPTIONS,
    OPTIONS,
    REMOTE_SCHEMES,
    Settings,
    check_name,
)
from modelpack.deployers.kubernetes._status import deployment_status, inference_service_status
from modelpack.errors import DeploymentError, InvalidInputError

# The options a deployment was made with, so `update` changes only what it is given.
CONFIG_ANNOTATION = "modelpack.dev/config"
# What modelpack alone resolves: KServe's storage initializer knows none of them.
_MODELPACK_SCHEMES = ("models:", "runs:")
# Where and how to connect is not part of a deployment: never stored with it.
_NOT_STORED = {"kubeconfig", "context", "namespace"}


class KubernetesDeployer:
    """Deploys a model image to a Kubernetes cluster with the official client."""

    name = "kubernetes"
    options: Mapping[str, str] = OPTIONS
    model_sets = True  # many models in one server (modelpack.deploy.ModelSet)

    # -- Deployer protocol -------------------------------------------------------------------

    def plan(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Plan:
        settings = Settings.from_config(config)
        check_name(name)
        cluster = Cluster(settings)
        # Discovery is a read: plan asks which HPA version the server has, and falls back to
        # autoscaling/v2 when no server is reachable, saying so.
        actions: list[str] = []
        try:
            hpa_version = cluster.hpa_version() if settings.max_replicas else render.HPA_VERSIONS[0]
            namespace = cluster.namespace
            exists = self._live(cluster, name, settings) is not None
        except DeploymentError as exc:
            hpa_version, namespace, exists = render.HPA_VERSIONS[0], cluster.namespace, False
            actions.append(f"note: {exc.message}; rendered without asking a server")
        image = settings.image or "<image: pass -C image=TAG>"
        self._check_model_uri(model_uri, settings)
        served, pinned = _pin_repository(model_uri, settings)
        docs = _documents(name, namespace, model_uri, served, settings, image, hpa_version)
        verb = "update (server-side apply, rolling)" if exists else "create (server-side apply)"
        actions += self._plan_models(model_uri, served, pinned, settings)
        actions += [
            f"{verb} {d['kind']} {namespace}/{name} ({d['apiVersion']}), field manager "
            f"{FIELD_MANAGER}"
            for d in docs
        ]
        actions.append(f"`get` reports the rollout of {namespace}/{name} until it is ready")
        return Plan(
            target=self.name,
            name=name,
            model_uri=model_uri,
            actions=actions,
            documents=docs,
            image=settings.image,
        )

    def create(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        settings = Settings.from_config(config)
        check_name(name)
        self._check_model_uri(model_uri, settings)
        image = settings.require_image()
        cluster = Cluster(settings)
        if self._live(cluster, name, settings) is not None:
            raise DeploymentError(
                f"a deployment named {name!r} exists in namespace {cluster.namespace}; "
                "use `modelpack deploy update` to change it"
            )
        docs = self._render(cluster, name, model_uri, settings, image, config)
        try:
            for doc in docs:
                cluster.apply(doc)
        except DeploymentError as exc:
            self._remove(cluster, name)
            raise DeploymentError(f"{exc.message}; removed what was created") from None
        return self._get(cluster, name, settings)

    def update(self, name: str, model_uri: str, config: Mapping[str, Any]) -> Deployment:
        check_name(name)
        cluster = Cluster(Settings.from_config(config))
        live = self._live(cluster, name, cluster.settings)
        if live is None:
            raise DeploymentError(
                f"no kubernetes deployment named {name!r} in namespace {cluster.namespace}; "
                "create it first"
            )
        previous = self._stored(live)
        given = {k: v for k, v in config.items() if k not in _NOT_STORED}
        kept = dict(previous.get("config", {}))
        if ModelSet.parse(model_uri) is None:  # the many-models options go with the set
            kept = {k: v for k, v in kept.items() if k not in MODEL_SET_OPTIONS}
        merged = {**kept, **given}
        settings = Settings.from_config(merged)
        self._check_model_uri(model_uri, settings)
        image = settings.require_image()
        docs = self._render(cluster, name, model_uri, settings, image, merged)
        for doc in docs:
            cluster.apply(doc)
        # A ConfigMap of per-model settings no longer rendered (left out, or one model now).
        rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
        for resource, obj in cluster.managed(name):
            if obj.kind == "ConfigMap" and (obj.kind, obj.metadata.name) not in rendered:
                cluster.delete(resource, obj.metadata.name)
        return self._get(cluster, name, settings)

    def delete(self, name: str, config: Mapping[str, Any]) -> None:
        settings = Settings.from_config(config)
        cluster = Cluster(settings)
        if not self._remove(cluster, name):
            raise DeploymentError(
                f"no kubernetes deployment named {name!r} in namespace {cluster.namespace}"
            )

    def get(self, name: str, config: Mapping[str, Any]) -> Deployment:
        settings = Settings.from_config(config)
        return self._get(Cluster(settings), name, settings)

    def list(self, config: Mapping[str, Any]) -> builtins.list[Deployment]:
        settings = Settings.from_config(config)
        cluster = Cluster(settings)
        names = sorted(
            {
                obj.metadata.name
                for _, obj in cluster.managed()
                if obj.kind in ("Deployment", "InferenceService")
            }
        )
        return [self._get(cluster, n, settings) for n in names]

    def predict(self, name: str, data: Any, config: Mapping[str, Any]) -> Any:
        from modelpack.payload import dumps, encode_example

        settings = Settings.from_config(config, predict=True)
        cluster = Cluster(settings)
        current = self._get(cluster, name, settings)
        route = _model_route(name, current.model_uri, config.get("model"))
        # During a rollout (or after a failed one) the Service still sends to the old pods.
        if current.status != "ready" and not current.details.get("available_replicas"):
            raise DeploymentError(
                f"kubernetes deployment {name!r} is {current.status}, not ready"
                + (f": {current.details['reason']}" if current.details.get("reason") else "")
            )
        service = name if not current.details.get("kserve") else f"{name}-predictor"
        body = dumps(encode_example(data))
        answer = cluster.post_service(service, "http", "invocations" + route, body)
        return answer["predictions"] if isinstance(answer, dict) else answer

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _plan_models(
        model_uri: str, served: str, pinned: Mapping[str, str], settings: Settings
    ) -> builtins.list[str]:
        """What a plan says of a model set: where each model comes from, what the pod runs."""
        given, model_set = ModelSet.parse(model_uri), ModelSet.parse(served)
        if given is None or model_set is None:
            return []
        lines = []
        for model, uri in model_set.models.items():
            if render.served_by_uri(uri, settings):
                how = "loaded by the server, following its alias"
            elif uri.startswith("oci:"):
                how = f"pulled by an init container into {render.MODELS_DIR}/{model}"
            else:
                how = f"fetched by an init container into {render.MODELS_DIR}/{model}"
            if model in pinned:
                how = f"from the repository {given.repository}, its tag pinned now by digest; {how}"
            lines.append(f"model {model}: {uri}, {how}")
        if model_set.repository:
            lines.append(f"models of the repository {model_set.repository}: read by the server")
        elif pinned:
            lines.append(
                f"the repository {given.repository} is read again by each update: a moved tag "
                "or a new model there rolls the pods"
            )
        args = render.serve_args(model_set, settings)
        lines.append(f"the server runs: modelpack serve {' '.join(args)}")
        return lines

    @staticmethod
    def _check_model_uri(model_uri: str, settings: Settings) -> None:
        model_set = ModelSet.parse(model_uri)  # a bad name or URI is refused here
        if model_set is not None:
            _check_model_set(model_set, settings)
            return
        given = [k for k in MODEL_SET_OPTIONS if getattr(settings, k) not in (None, False)]
        if given:
            raise InvalidInputError(
                f"option(s) {', '.join(given)} apply to several models: give -m NAME=URI "
                "(repeatable) or --repository"
            )
        source = settings.source(model_uri)
        if source == "fetch" and not model_uri.startswith(REMOTE_SCHEMES):
            raise InvalidInputError(
                f"model_source=fetch needs a models:/, runs:/, s3:// or oci:// URI the pod can "
                f"reach, not {model_uri!r}"
            )
        if source == "kserve" and not settings.kserve:
            raise InvalidInputError("model_source=kserve needs kserve=true (an InferenceService)")
        if source == "kserve" and (
            "://" not in model_uri or model_uri.startswith(_MODELPACK_SCHEMES)
        ):
            raise InvalidInputError(
                f"model_source=kserve needs a URI KServe's storage reads (oci://, s3://, gs://, "
                f"https://...), not {model_uri!r}; use model_source=fetch"
            )
        pulls = source == "fetch" and model_uri.startswith("oci:")
        if (settings.registry_secret or settings.registry_insecure) and not pulls:
            raise InvalidInputError(
                "registry_secret and registry_insecure apply to an oci:// model that the init "
                "container pulls (model_source=fetch)"
            )

    def _render(
        self,
        cluster: Cluster,
        name: str,
        model_uri: str,
        settings: Settings,
        image: str,
        config: Mapping[str, Any],
    ) -> builtins.list[dict[str, Any]]:
        hpa_version = cluster.hpa_version() if settings.max_replicas and not settings.kserve else ""
        served, _ = _pin_repository(model_uri, settings)
        docs = _documents(name, cluster.namespace, model_uri, served, settings, image, hpa_version)
        kept = {k: v for k, v in config.items() if k not in _NOT_STORED}
        if settings.model_config is not None:  # its content: an update needs no file
            kept["model_config"] = settings.model_config
        stored = {"model_uri": model_uri, "config": kept}
        [workload] = [d for d in docs if d["kind"] in ("Deployment", "InferenceService")]
        workload["metadata"]["annotations"][CONFIG_ANNOTATION] = json.dumps(stored, default=str)
        return docs

    @staticmethod
    def _live(cluster: Cluster, name: str, settings: Settings) -> Any | None:
        if settings.kserve:
            return cluster.read(render.KSERVE_VERSION, "InferenceService", name)
        return cluster.read("apps/v1", "Deployment", name) or cluster.read(
            render.KSERVE_VERSION, "InferenceService", name
        )

    @staticmethod
    def _stored(live: Any) -> dict[str, Any]:
        annotations = live.metadata.annotations or {}
        try:
            stored = json.loads(annotations.get(CONFIG_ANNOTATION, "{}"))
        except ValueError:
            stored = {}
        return stored if isinstance(stored, dict) else {}

    def _remove(self, cluster: Cluster, name: str) -> bool:
        found = list(cluster.managed(name))
        for resource, obj in found:
            cluster.delete(resource, obj.metadata.name)
        return bool(found)

    def _get(self, cluster: Cluster, name: str, settings: Settings) -> Deployment:
        live = self._live(cluster, name, settings)
        if live is None:
            raise DeploymentError(
                f"no kubernetes deployment named {name!r} in namespace {cluster.namespace}"
            )
        stored = self._stored(live)
        annotations = live.metadata.annotations or {}
        model_uri = stored.get("model_uri") or annotations.get(render.MODEL_URI_ANNOTATION, "?")
        if live.kind == "InferenceService":
            status, details = inference_service_status(live)
            details["kserve"] = True
        else:
            status, details = deployment_status(live, lambda: cluster.pods(name))
        port = stored.get("config", {}).get("service_port", 80)
        details["namespace"] = cluster.namespace
        return Deployment(
            name=name,
            target=self.name,
            model_uri=model_uri,
            status=status,
            endpoint=details.pop("url", None) or f"http://{name}.{cluster.namespace}.svc:{port}",
            details=details,
        )


def _check_model_set(model_set: ModelSet, settings: Settings) -> None:
    """A set the pod can fetch and serve, refused in one line before anything is applied."""
    from modelpack._names import check_model_name  # as the server checks them

    if settings.kserve:
        raise InvalidInputError(
            "kserve=true serves one model per InferenceService: give one model, or leave out "
            "kserve for a Deployment serving the set"
        )
    if settings.model_source not in (None, "fetch"):
        raise InvalidInputError(
            f"model_source={settings.model_source}: the models of a set are fetched into the pod "
            "(model_source=fetch, the default for several models)"
        )
    if settings.workers != 1:
        raise InvalidInputError(
            "a many-models server runs one worker (a load, unload or memory budget holds for the "
            "whole server): leave out workers"
        )
    for model, uri in model_set.models.items():
        check_model_name(model)
        if not uri.startswith(REMOTE_SCHEMES):
            raise InvalidInputError(
                f"model {model!r}: {uri!r} is not a URI the pod can reach; give models:/, "
                "runs:/, s3:// or oci://"
            )
    repository = model_set.repository or ""
    if repository and not repository.startswith(("models:", "oci://")):
        raise InvalidInputError(
            f"--repository {repository}: a folder on this machine, which the pod "
            "cannot read; give --repository models:/ (the registry the pod reaches through "
            "MODELPACK_STORE_URI in -C env), oci://HOST/NAMESPACE, or the models with -m NAME=URI"
        )
    pulls = repository.startswith("oci://") or any(
        uri.startswith("oci:") for uri in model_set.models.values()
    )
    if (settings.registry_secret or settings.registry_insecure) and not pulls:
        raise InvalidInputError(
            "registry_secret and registry_insecure apply to an oci:// model that an init "
            "container pulls"
        )


def _pin_repository(model_uri: str, settings: Settings) -> tuple[str, dict[str, str]]:
    """The model URI the pod serves, and NAME -> pinned URI of each model read now from an
    ``oci://`` repository: the set with every repository of the namespace that has the tag
    (names, glob filter and tag as ``modelpack serve --repository`` reads them) as a model
    ``oci://HOST/REPO:TAG@DIGEST`` the init containers pull. Any other URI is served as given."""
    model_set = ModelSet.parse(model_uri)
    if model_set is None or not (model_set.repository or "").startswith("oci://"):
        return model_uri, {}
    from modelpack.oci import manifest_digest
    from modelpack.servers.http._sources import Repository, combine

    source = str(model_set.repository)
    insecure = settings.registry_insecure
    repository = Repository(source, model_set.filter, model_set.alias, insecure=insecure)
    found = {
        model: uri
        for model, uri in combine(repository, model_set.models).items()
        if model not in model_set.models
    }
    if not found:
        matching = f" matching {model_set.filter!r}" if model_set.filter else ""
        raise InvalidInputError(
            f"--repository {source}: no repository{matching} has the tag "
            f"{model_set.alias or 'latest'!r}: nothing to deploy from it"
        )
    pinned = {
        model: f"{uri}@{manifest_digest(uri, insecure=insecure)}" for model, uri in found.items()
    }
    return ModelSet({**model_set.models, **pinned}).uri, pinned


def _documents(
    name: str,
    namespace: str,
    model_uri: str,
    served: str,
    settings: Settings,
    image: str,
    hpa_version: str,
) -> builtins.list[dict[str, Any]]:
    """The manifests serving ``served``; each object's model-uri annotation is ``model_uri``, the
    set as given (the pod template's names the pinned models the pods run)."""
    docs = render.documents(name, namespace, served, settings, image, hpa_version)
    for doc in docs:
        doc["metadata"]["annotations"][render.MODEL_URI_ANNOTATION] = model_uri
    return docs


def _model_route(name: str, model_uri: str, model: Any) -> str:
    """``/NAME`` of the model of a many-models deployment that answers a predict; else ``""``."""
    model_set = ModelSet.parse(model_uri)
    if model_set is None:
        if model is not None:
            raise InvalidInputError(
                f"kubernetes deployment {name!r} serves one model: leave out model"
            )
        return ""
    if model is None:
        named = ", ".join(model_set.models) or f"the models of {model_set.repository}"
        raise InvalidInputError(
            f"kubernetes deployment {name!r} serves several models ({named}): name one with "
            "--model (-C model=NAME)"
        )
    from modelpack._names import check_model_name

    check_model_name(str(model))  # it goes into the proxy's URL path
    if model_set.models and not model_set.repository and str(model) not in model_set.models:
        raise InvalidInputError(
            f"kubernetes deployment {name!r} serves no model {model!r} (it serves "
            f"{', '.join(model_set.models)})"
        )
    return f"/{model}"
