"""The ``kubernetes`` target: a Deployment, Service and HorizontalPodAutoscaler (or a KServe
InferenceService) applied with server-side apply, updated and deleted by labels.

``create`` and ``update`` apply the manifests and return; ``get`` reads the rollout's status
(``modelpack.deploy`` polls it). An update whose pods never become ready is left as it is: the
Deployment's rolling strategy (``maxUnavailable: 0``) keeps the old pods serving, ``get``
reports ``updating``, or ``failed`` once its progress deadline passes, and the next
``update`` (or ``kubectl rollout undo``) replaces it.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import Any

from modelpack.deploy import Deployment, Plan
from modelpack.deployers.kubernetes import _render as render
from modelpack.deployers.kubernetes._cluster import FIELD_MANAGER, Cluster
from modelpack.deployers.kubernetes._options import OPTIONS, Settings, check_name
from modelpack.deployers.kubernetes._status import deployment_status, inference_service_status
from modelpack.errors import DeploymentError, InvalidInputError

# The options a deployment was made with, so `update` changes only what it is given.
CONFIG_ANNOTATION = "modelpack.dev/config"
_REMOTE_SCHEMES = ("models:", "runs:", "s3:", "oci:")
# What modelpack alone resolves: KServe's storage initializer knows none of them.
_MODELPACK_SCHEMES = ("models:", "runs:")
# Where and how to connect is not part of a deployment: never stored with it.
_NOT_STORED = {"kubeconfig", "context", "namespace"}


class KubernetesDeployer:
    """Deploys a model image to a Kubernetes cluster with the official client."""

    name = "kubernetes"
    options: Mapping[str, str] = OPTIONS

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
        docs = render.documents(name, namespace, model_uri, settings, image, hpa_version)
        verb = "update (server-side apply, rolling)" if exists else "create (server-side apply)"
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
        merged = {**previous.get("config", {}), **given}
        settings = Settings.from_config(merged)
        self._check_model_uri(model_uri, settings)
        image = settings.require_image()
        for doc in self._render(cluster, name, model_uri, settings, image, merged):
            cluster.apply(doc)
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

        settings = Settings.from_config(config)
        cluster = Cluster(settings)
        current = self._get(cluster, name, settings)
        # During a rollout (or after a failed one) the Service still sends to the old pods.
        if current.status != "ready" and not current.details.get("available_replicas"):
            raise DeploymentError(
                f"kubernetes deployment {name!r} is {current.status}, not ready"
                + (f": {current.details['reason']}" if current.details.get("reason") else "")
            )
        service = name if not current.details.get("kserve") else f"{name}-predictor"
        answer = cluster.post_service(service, "http", "invocations", dumps(encode_example(data)))
        return answer["predictions"] if isinstance(answer, dict) else answer

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _check_model_uri(model_uri: str, settings: Settings) -> None:
        source = settings.source(model_uri)
        if source == "fetch" and not model_uri.startswith(_REMOTE_SCHEMES):
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
        docs = render.documents(name, cluster.namespace, model_uri, settings, image, hpa_version)
        stored = {
            "model_uri": model_uri,
            "config": {k: v for k, v in config.items() if k not in _NOT_STORED},
        }
        docs[0]["metadata"]["annotations"][CONFIG_ANNOTATION] = json.dumps(stored, default=str)
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
