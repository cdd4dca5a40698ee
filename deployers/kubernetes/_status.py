"""Rollout status from live objects, as ``kubectl rollout status`` judges it, with the
Deployment's and pods' conditions as the reason when it is not ready."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _conditions(items: Any, *, only_false: bool = False) -> list[str]:
    out = []
    for c in items or []:
        if only_false and str(c.status) == "True":
            continue
        text = f"{c.type}={c.status}"
        if getattr(c, "reason", None):
            text += f" ({c.reason}"
            text += f": {c.message})" if getattr(c, "message", None) else ")"
        out.append(text)
    return out


def _pod_summary(pod: Any) -> str:
    status = pod.status or {}
    parts = [f"pod {pod.metadata.name}: {getattr(status, 'phase', None) or 'Pending'}"]
    parts += _conditions(getattr(status, "conditions", None), only_false=True)
    init = getattr(status, "initContainerStatuses", None) or []
    for cs in [*init, *(getattr(status, "containerStatuses", None) or [])]:
        waiting = getattr(cs.state, "waiting", None) if cs.state else None
        if waiting:
            parts.append(f"{cs.name} waiting ({waiting.reason}: {waiting.message or ''})")
    for cs in init:  # a failing init container (the model pull) says why when it last ended
        last = getattr(cs, "lastState", None)
        ended = getattr(last, "terminated", None) if last else None
        if ended and ended.exitCode:
            lines = (ended.message or "").strip().splitlines()
            parts.append(f"{cs.name} exited {ended.exitCode}" + (f": {lines[-1]}" if lines else ""))
    return ", ".join(parts)


def deployment_status(live: Any, pods: Callable[[], list[Any]]) -> tuple[str, dict[str, Any]]:
    spec, status = live.spec, live.status or {}
    desired = spec.replicas if spec.replicas is not None else 1
    generation = live.metadata.generation or 0
    observed = getattr(status, "observedGeneration", None) or 0
    updated = getattr(status, "updatedReplicas", None) or 0
    replicas = getattr(status, "replicas", None) or 0
    available = getattr(status, "availableReplicas", None) or 0
    ready_replicas = getattr(status, "readyReplicas", None) or 0
    conditions = getattr(status, "conditions", None) or []
    details: dict[str, Any] = {
        "replicas": desired,
        "ready_replicas": ready_replicas,
        "updated_replicas": updated,
        "available_replicas": available,
        "image": spec.template.spec.containers[0].image,
    }
    deadline = any(
        c.type == "Progressing"
        and str(c.status) == "False"
        and c.reason == "ProgressDeadlineExceeded"
        for c in conditions
    )
    if (
        observed >= generation
        and updated >= desired
        and replicas <= updated
        and available >= updated
    ):
        return "ready", details
    if deadline:
        state = "failed"
    elif observed <= 1 and available == 0:
        state = "creating"
    else:
        state = "updating"
    reasons = _conditions(conditions) or ["no Deployment conditions yet"]
    if observed < generation:
        reasons.insert(0, f"generation {generation} not yet observed by the controller")
    else:
        reasons.insert(0, f"{available}/{desired} available, {updated} updated")
    found = pods()
    reasons += [_pod_summary(p) for p in found[:3]] or [
        "no pods (is a controller-manager, scheduler and kubelet running?)"
    ]
    details["reason"] = "; ".join(reasons)
    return state, details


def inference_service_status(live: Any) -> tuple[str, dict[str, Any]]:
    status = live.status or {}
    conditions = getattr(status, "conditions", None) or []
    details: dict[str, Any] = {}
    url = getattr(status, "url", None)
    if url:
        details["url"] = url
    if any(c.type == "Ready" and str(c.status) == "True" for c in conditions):
        return "ready", details
    details["reason"] = "; ".join(_conditions(conditions)) or "no InferenceService conditions yet"
    failed = any(c.type == "Ready" and str(c.status) == "False" for c in conditions)
    return ("failed" if failed else "creating"), details
