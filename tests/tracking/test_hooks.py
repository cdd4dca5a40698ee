from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import modelpack
from modelpack import tracking
from modelpack.errors import PluginError


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def on_event(self, event: str, payload: Mapping[str, Any]) -> None:
        self.events.append((event, dict(payload)))


class Broken:
    def on_event(self, event: str, payload: Mapping[str, Any]) -> None:
        raise RuntimeError("hook is down")


@pytest.fixture
def recorder():
    hook = Recorder()
    tracking.add_hook(hook)
    yield hook
    tracking.remove_hook(hook)


def test_in_process_hook_receives_every_event(home, tmp_path, recorder):
    artifact = tmp_path / "f.txt"
    artifact.write_text("x")
    with modelpack.start_run(experiment="e", tags={"k": "v"}) as run:
        modelpack.log_param("p", 1)
        modelpack.log_metric("m", 1.0, step=0)
        modelpack.log_metric("m", 2.0, step=1)
        modelpack.set_tag("t", "u")
        modelpack.log_artifact(artifact)
        modelpack.log_model(_Const(), "model")
    names = [event for event, _ in recorder.events]
    assert names[0] == "run_started" and names[-1] == "run_ended"
    assert set(names) == set(tracking.hooks.EVENTS)
    by_name = {event: payload for event, payload in recorder.events}
    assert by_name["run_started"]["experiment"] == "e" and by_name["run_started"]["tags"] == {
        "k": "v"
    }
    assert by_name["param_logged"] == {"run_id": run.id, "params": {"p": "1"}}
    steps = [m["step"] for e, p in recorder.events if e == "metric_logged" for m in p["metrics"]]
    assert steps == [0, 1]
    assert by_name["model_logged"]["uri"] == f"runs:/{run.id}/model"
    assert by_name["model_logged"]["flavors"] == ["python"]
    assert by_name["run_ended"]["status"] == "FINISHED"


def test_a_failing_hook_is_logged_and_the_run_goes_on(home, recorder, caplog):
    broken = Broken()
    tracking.add_hook(broken)
    try:
        with caplog.at_level(logging.ERROR, "modelpack.tracking"), modelpack.start_run() as run:
            modelpack.log_param("p", 1)
            modelpack.log_metric("m", 1.0)
    finally:
        tracking.remove_hook(broken)
    assert modelpack.get_run(run.id).status == "FINISHED"
    assert "hook is down" in caplog.text and "Broken failed on run_started" in caplog.text
    assert [e for e, _ in recorder.events].count("run_ended") == 1


def test_a_hook_without_on_event_is_refused(home):
    with pytest.raises(PluginError, match="on_event"):
        tracking.add_hook(object())  # type: ignore[arg-type]


HOOK_MODULE = """
EVENTS = []


class MirrorHook:
    def on_event(self, event, payload):
        EVENTS.append((event, dict(payload)))
"""


@pytest.fixture
def installed_hook_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A distribution on sys.path registering a hook in the modelpack.tracking_hooks group."""
    site = tmp_path / "site"
    (site / "mp_mirror_hook.py").parent.mkdir()
    (site / "mp_mirror_hook.py").write_text(HOOK_MODULE)
    dist = site / "mp_mirror_hook-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mp-mirror-hook\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[modelpack.tracking_hooks]\nmirror = mp_mirror_hook:MirrorHook\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    tracking.reload_plugins()
    yield importlib.import_module("mp_mirror_hook")
    monkeypatch.undo()
    sys.modules.pop("mp_mirror_hook", None)
    modelpack.plugins.get_plugin.cache_clear()
    tracking.reload_plugins()


def test_entry_point_hook_plugin_receives_events(home, installed_hook_plugin):
    assert "mirror" in modelpack.plugins.names("tracking_hook")
    with modelpack.start_run(experiment="mirrored") as run:
        modelpack.log_metric("m", 1.0)
    events = installed_hook_plugin.EVENTS
    assert [e for e, _ in events] == ["run_started", "metric_logged", "run_ended"]
    assert events[0][1]["run_id"] == run.id


class _Const:
    def predict(self, data: Any) -> Any:
        return data
