"""Experiment tracking: runs, params, metrics, tags, artifacts and models logged to a run.

Imported on first use of a tracking name from ``modelpack``; imports no ML library.
"""

from __future__ import annotations

from modelpack.tracking._autolog import autolog
from modelpack.tracking._store import Metric, Run
from modelpack.tracking.fluent import (
    ActiveRun,
    active_run,
    end_run,
    flush,
    get_metric_history,
    get_run,
    list_artifacts,
    log_artifact,
    log_metric,
    log_metrics,
    log_model,
    log_param,
    log_params,
    search_runs,
    set_tag,
    set_tags,
    start_run,
)
from modelpack.tracking.hooks import add_hook, reload_plugins, remove_hook

__all__ = [
    "ActiveRun",
    "Metric",
    "Run",
    "active_run",
    "add_hook",
    "autolog",
    "end_run",
    "flush",
    "get_metric_history",
    "get_run",
    "list_artifacts",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "reload_plugins",
    "remove_hook",
    "search_runs",
    "set_tag",
    "set_tags",
    "start_run",
]
