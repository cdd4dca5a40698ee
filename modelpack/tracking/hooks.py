"""Tracking hooks: run events go to in-process hooks and `modelpack.tracking_hooks` plugins.

A hook that raises is logged and skipped: mirroring a run elsewhere must never break training.
Metric events are delivered per flushed batch, from the flusher thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from modelpack import plugins
from modelpack.errors import PluginError
from modelpack.plugins import TrackingHook

EVENTS = (
    "run_started",
    "param_logged",
    "metric_logged",
    "tag_set",
    "artifact_logged",
    "model_logged",
    "run_ended",
)

log = logging.getLogger("modelpack.tracking")
_local_hooks: list[TrackingHook] = []
_plugin_hooks: list[tuple[str, TrackingHook]] | None = None
_lock = threading.Lock()


def add_hook(hook: TrackingHook) -> None:
    """Send every tracking event of this process to ``hook.on_event(event, payload)``."""
    plugins.check_plugin("tracking_hook", hook, label=type(hook).__qualname__)
    with _lock:
        if hook not in _local_hooks:
            _local_hooks.append(hook)


def remove_hook(hook: TrackingHook) -> None:
    with _lock:
        if hook in _local_hooks:
            _local_hooks.remove(hook)


def reload_plugins() -> None:
    """Look the ``modelpack.tracking_hooks`` entry points up again (after an install)."""
    global _plugin_hooks
    with _lock:
        _plugin_hooks = None


def _discover() -> list[tuple[str, TrackingHook]]:
    global _plugin_hooks
    with _lock:
        if _plugin_hooks is not None:
            return _plugin_hooks
        found: list[tuple[str, TrackingHook]] = []
        try:
            hook_names = plugins.names("tracking_hook")
        except PluginError as exc:
            log.warning("tracking hooks disabled: %s", exc)
            hook_names = []
        for name in hook_names:
            try:
                found.append((name, plugins.get_plugin("tracking_hook", name)))
            except PluginError as exc:
                log.warning("tracking hook %r skipped: %s", name, exc)
        _plugin_hooks = found
        return found


def active() -> bool:
    return bool(_local_hooks) or bool(_discover())


def emit(event: str, payload: Mapping[str, Any]) -> None:
    with _lock:
        local = [(type(h).__qualname__, h) for h in _local_hooks]
    for label, hook in [*_discover(), *local]:
        try:
            hook.on_event(event, payload)
        except Exception:
            log.exception("tracking hook %s failed on %s; the run goes on", label, event)
