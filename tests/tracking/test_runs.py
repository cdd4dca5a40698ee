from __future__ import annotations

import pytest

import modelpack
from modelpack import tracking
from modelpack.errors import InvalidInputError, ParamConflictError, RunNotFoundError, RunStateError
from modelpack.tracking import _batcher


def test_run_lifecycle_params_tags_and_nesting(store_uri):
    with modelpack.start_run(experiment="exp", run_name="outer", tags={"team": "a"}) as run:
        assert modelpack.active_run() is run
        modelpack.log_params({"lr": 0.1, "layers": 3})
        modelpack.log_param("lr", 0.1)  # the same value again is fine
        modelpack.set_tag("team", "b")
        with modelpack.start_run(run_name="child", nested=True) as child:
            assert modelpack.active_run() is child and child.parent_id == run.id
            modelpack.log_metric("acc", 0.5)
        assert modelpack.active_run() is run
    assert modelpack.active_run() is None

    got = modelpack.get_run(run.id)
    assert (got.experiment, got.name, got.status, got.parent_id) == (
        "exp",
        "outer",
        "FINISHED",
        None,
    )
    assert got.params == {"layers": "3", "lr": "0.1"} and got.tags == {"team": "b"}
    assert got.end_time is not None and got.end_time >= got.start_time
    inner = modelpack.get_run(child.id)
    assert (inner.experiment, inner.parent_id, inner.metrics) == ("exp", run.id, {"acc": 0.5})
    assert [r.id for r in modelpack.search_runs("exp")] == [child.id, run.id]
    assert [r.id for r in tracking.search_runs(parent_id=run.id)] == [child.id]
    assert modelpack.search_runs("other") == []


def test_statuses_failed_and_killed(store_uri):
    with pytest.raises(ZeroDivisionError), modelpack.start_run(experiment="e") as failed:
        1 / 0  # noqa: B018
    with pytest.raises(KeyboardInterrupt), modelpack.start_run(experiment="e") as killed:
        raise KeyboardInterrupt
    run = modelpack.start_run(experiment="e")
    modelpack.end_run()
    assert [modelpack.get_run(r.id).status for r in (failed, killed, run)] == [
        "FAILED",
        "KILLED",
        "FINISHED",
    ]


def test_ending_a_parent_ends_its_children(store_uri):
    parent = modelpack.start_run(experiment="e")
    child = modelpack.start_run(nested=True)
    parent.end("FAILED")
    assert modelpack.active_run() is None
    assert modelpack.get_run(child.id).status == "FAILED"


def test_state_errors_are_clear(store_uri):
    with pytest.raises(RunStateError, match="no active run"):
        modelpack.log_metric("x", 1.0)
    with modelpack.start_run(experiment="e"):
        with pytest.raises(RunStateError, match="nested=True"):
            modelpack.start_run(experiment="e")
        with pytest.raises(InvalidInputError, match="not a number"):
            modelpack.log_metric("x", "abc")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="param key"):
            modelpack.log_param("", 1)
        # Past 64 bits the store would fail later, in the batcher's thread, with the batch.
        with pytest.raises(InvalidInputError, match="step 9223372036854775808 is outside"):
            modelpack.log_metric("x", 1.0, step=2**63)
        with pytest.raises(InvalidInputError, match="timestamp 'soon' is not an integer"):
            modelpack.log_metric("x", 1.0, timestamp="soon")  # type: ignore[arg-type]
        modelpack.log_metric("x", 1.0, step=2**63 - 1)  # the edge itself is fine
    with pytest.raises(RunNotFoundError):
        modelpack.get_run("nope")


def test_params_are_immutable(store_uri):
    with modelpack.start_run(experiment="e") as run:
        modelpack.log_param("lr", 0.1)
        with pytest.raises(ParamConflictError, match="'lr'.*immutable") as info:
            modelpack.log_params({"lr": 0.2, "other": 1})
        assert info.value.code == "param_conflict"
    # A conflicting batch is refused whole.
    assert modelpack.get_run(run.id).params == {"lr": "0.1"}


def test_metrics_are_batched_and_all_written_in_order(store_uri, monkeypatch):
    monkeypatch.setattr(_batcher, "BATCH", 1000)
    with modelpack.start_run(experiment="e") as run:
        for step in range(5000):
            modelpack.log_metric("loss", 1.0 / (step + 1), step=step)
        modelpack.log_metrics({"acc": 0.9, "f1": 0.8}, step=7)
        modelpack.log_metric("nan", float("nan"))  # dropped with a log line, not an error
    history = tracking.get_metric_history(run.id, "loss")
    assert [m.step for m in history] == list(range(5000))
    assert history[-1].value == pytest.approx(1 / 5000)
    got = modelpack.get_run(run.id)
    assert got.metrics == {"loss": pytest.approx(1 / 5000), "acc": 0.9, "f1": 0.8}


def test_latest_metric_is_the_highest_step(store_uri):
    with modelpack.start_run(experiment="e") as run:
        modelpack.log_metric("m", 3.0, step=3, timestamp=1)
        modelpack.log_metric("m", 1.0, step=1, timestamp=2)
    assert modelpack.get_run(run.id).metrics == {"m": 3.0}


@pytest.mark.parametrize("name", ['it\'s "quoted"', "modèle-模型", "x'; DROP TABLE runs; --"])
def test_odd_names_round_trip(store_uri, name):
    with modelpack.start_run(experiment=name, run_name=name, tags={name: name}) as run:
        modelpack.log_param(name, name)
        modelpack.log_metric(name, 1.0)
    got = modelpack.get_run(run.id)
    assert (got.experiment, got.name, got.params, got.tags, got.metrics) == (
        name,
        name,
        {name: name},
        {name: name},
        {name: 1.0},
    )


def test_a_backlog_is_flushed_in_batches():
    # A loop faster than the store builds a backlog; one call with all of it would exceed what
    # the team server takes per request (MAX_METRICS_PER_CALL) and lose every row in it.
    from typing import cast

    from modelpack.tracking._backend import TrackingBackend

    sizes: list[int] = []

    class Recorder:
        def insert_metrics(self, rows: list[_batcher.Row]) -> None:
            sizes.append(len(rows))

    store = cast(TrackingBackend, Recorder())
    batcher = _batcher.MetricBatcher()
    batcher._pending = [(store, "r", "loss", 1.0, i, 0) for i in range(2 * _batcher.BATCH + 7)]
    batcher.flush()
    assert sizes == [_batcher.BATCH, _batcher.BATCH, 7]
