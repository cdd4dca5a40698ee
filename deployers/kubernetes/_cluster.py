"""Talking to the API server: connection, discovery, server-side apply, rollout status."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelpack.deployers.kubernetes._options import Settings
from modelpack.deployers.kubernetes._render import (
    DEPLOYMENT_LABEL,
    HPA_VERSIONS,
    KSERVE_VERSION,
    SELECTOR,
)
from modelpack.errors import DeploymentError, MissingDependencyError

FIELD_MANAGER = "modelpack"


def api_message(exc: Exception) -> str:
    """The API server's own message from an ApiException (its Status body), else the error."""
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
            return str(status.get("message") or body)
        except (TypeError, ValueError):
            return str(body)[:500]
    reason = getattr(exc, "reason", None)
    return str(reason or exc)


class Cluster:
    """One API server, reached through a kubeconfig (or in-cluster). Connects on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._dyn: Any = None
        self._namespace: str | None = settings.namespace
        self.host = "?"

    # -- connection --------------------------------------------------------------------------

    @property
    def dyn(self) -> Any:
        if self._dyn is None:
            self._dyn = self._connect()
        return self._dyn

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = self._kubeconfig_namespace() or "default"
        return self._namespace

    def _kubeconfig_path(self) -> str | None:
        if self.settings.kubeconfig:
            return self.settings.kubeconfig
        env = os.environ.get("KUBECONFIG")
        if env:
            return env.split(os.pathsep)[0]
        default = Path.home() / ".kube" / "config"
        return str(default) if default.is_file() else None

    def _kubeconfig_namespace(self) -> str | None:
        config: Any = importlib.import_module("kubernetes.config")  # untyped library

        path = self._kubeconfig_path()
        if path is None:
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            return ns_file.read_text().strip() if ns_file.is_file() else None
        try:
            contexts, active = config.list_kube_config_contexts(path)
        except (OSError, config.ConfigException):
            return None
        chosen = next((c for c in contexts if c["name"] == self.settings.context), active)
        return (chosen or {}).get("context", {}).get("namespace")

    def _connect(self) -> Any:
        try:
            client: Any = importlib.import_module("kubernetes.client")  # untyped library
            config: Any = importlib.import_module("kubernetes.config")
            dynamic: Any = importlib.import_module("kubernetes.dynamic")
        except ImportError:
            raise MissingDependencyError(
                "the kubernetes target needs the kubernetes client: "
                "pip install 'modelpack[kubernetes]'"
            ) from None
        path = self._kubeconfig_path()
        try:
            if path is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                config.load_incluster_config()
                api = client.ApiClient()
            elif path is None:
                raise DeploymentError(
                    "no kubeconfig found: pass -C kubeconfig=FILE, set KUBECONFIG or write "
                    "~/.kube/config"
                )
            else:
                api = config.new_client_from_config(config_file=path, context=self.settings.context)
        except (OSError, config.ConfigException) as exc:
            raise DeploymentError(f"cannot read the kubeconfig {path}: {exc}") from None
        api.configuration.retries = 1
        self.host = api.configuration.host
        try:
            return dynamic.DynamicClient(api)
        except Exception as exc:
            raise self.unreachable(exc) from None

    def unreachable(self, exc: Exception) -> DeploymentError:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, DeploymentError):  # e.g. no kubeconfig: already says what to do
            return exc
        if isinstance(exc, ApiException):
            return DeploymentError(
                f"the Kubernetes API server at {self.host} answered {exc.status}: "
                f"{api_message(exc)}"
            )
        reason = getattr(exc, "reason", None) or exc
        return DeploymentError(f"cannot reach the Kubernetes API server at {self.host}: {reason}")

    # -- discovery ---------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Any | None:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise self.unreachable(exc) from None

    def hpa_version(self) -> str:
        for version in HPA_VERSIONS:
            if self.resource(version, "HorizontalPodAutoscaler") is not None:
                return version
        raise DeploymentError(
            f"the API server at {self.host} serves no HorizontalPodAutoscaler API "
            f"({' or '.join(HPA_VERSIONS)}); pass -C max_replicas=0 to render none"
        )

    def _required(self, api_version: str, kind: str) -> Any:
        found = self.resource(api_version, kind)
        if found is None:
            hint = " (is KServe installed?)" if api_version == KSERVE_VERSION else ""
            raise DeploymentError(
                f"the API server at {self.host} does not serve {kind} ({api_version}){hint}"
            )
        return found

    # -- reads and writes --------------------------------------------------------------------

    def read(self, api_version: str, kind: str, name: str) -> Any | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.resource(api_version, kind)
        if resource is None:
            return None
        try:
            return self.dyn.get(resource, name=name, namespace=self.namespace)
        except NotFoundError:
            return None
        except Exception as exc:
            raise self.unreachable(exc) from None

    def apply(self, document: Mapping[str, Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        kind, name = document["kind"], document["metadata"]["name"]
        resource = self._required(document["apiVersion"], kind)
        try:
            return self.dyn.server_side_apply(
                resource,
                body=dict(document),
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except ApiException as exc:
            raise DeploymentError(
                f"the API server refused the {kind} {name!r}: {api_message(exc)}"
            ) from None
        except Exception as exc:
            raise self.unreachable(exc) from None

    def managed(self, name: str | None = None) -> Iterator[tuple[Any, Any]]:
        """(resource, object) for everything modelpack created here (for one deployment)."""
        selector = SELECTOR + (f",{DEPLOYMENT_LABEL}={name}" if name else "")
        kinds = [
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            *((v, "HorizontalPodAutoscaler") for v in HPA_VERSIONS),
            (KSERVE_VERSION, "InferenceService"),
            ("v1", "ConfigMap"),  # a many-models deployment's per-model settings
        ]
        seen: set[str] = set()
        for api_version, kind in kinds:
            resource = self.resource(api_version, kind)
            if resource is None:
                continue
            try:
                found = self.dyn.get(resource, namespace=self.namespace, label_selector=selector)
            except Exception as exc:
                raise self.unreachable(exc) from None
            for obj in found.items:
                uid = obj.metadata.uid
                if uid not in seen:  # one HPA is listed under both autoscaling versions
                    seen.add(uid)
                    yield resource, obj

    def delete(self, resource: Any, name: str) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            self.dyn.delete(
                resource, name=name, namespace=self.namespace, propagation_policy="Background"
            )
        except NotFoundError:
            pass
        except Exception as exc:
            raise self.unreachable(exc) from None

    def pods(self, name: str) -> list[Any]:
        resource = self._required("v1", "Pod")
        try:
            found = self.dyn.get(
                resource, namespace=self.namespace, label_selector=f"{DEPLOYMENT_LABEL}={name}"
            )
        except Exception as exc:
            raise self.unreachable(exc) from None
        return list(found.items)

    def post_service(self, name: str, port_name: str, path: str, body: bytes) -> Any:
        """POST to a Service through the API server's proxy (works from outside the cluster)."""
        from kubernetes.client.exceptions import ApiException

        api = self.dyn.client
        url = f"/api/v1/namespaces/{self.namespace}/services/{name}:{port_name}/proxy/{path}"
        try:
            response = api.call_api(
                url,
                "POST",
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=json.loads(body),
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=300,
            )
        except ApiException as exc:
            raise DeploymentError(
                f"predict through the API server proxy to service {name!r} failed "
                f"({exc.status}): {api_message(exc)}"
            ) from None
        except Exception as exc:
            raise self.unreachable(exc) from None
        return json.loads(response[0].data)
