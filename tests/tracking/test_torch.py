from __future__ import annotations

import pytest
import torch

import modelpack
from modelpack import tracking
from modelpack.tracking.torch import TrainingLogger, log_epoch


def _train(tracker: TrainingLogger, epochs: int = 2, steps: int = 4) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(epochs):
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tracker.step(loss=loss)
        tracker.end_epoch(val_loss=loss.detach())


def test_training_logger_logs_steps_and_epochs(home):
    with TrainingLogger(experiment="torch", params={"lr": 0.1}) as tracker:
        _train(tracker)
    [run] = modelpack.search_runs("torch")
    assert run.status == "FINISHED" and run.params == {"lr": "0.1"}
    steps = tracking.get_metric_history(run.id, "loss")
    assert [m.step for m in steps] == list(range(8))
    epochs = tracking.get_metric_history(run.id, "epoch_loss")
    assert [m.step for m in epochs] == [0, 1]
    assert epochs[0].value == pytest.approx(sum(m.value for m in steps[:4]) / 4)
    assert [m.step for m in tracking.get_metric_history(run.id, "val_loss")] == [0, 1]


def test_training_logger_uses_the_active_run_and_log_epoch(home):
    with modelpack.start_run(experiment="torch") as run:
        with TrainingLogger(log_every=2) as tracker:
            _train(tracker, epochs=1)
        log_epoch(5, loss=torch.tensor(0.25), acc=0.5)
    assert [m.step for m in tracking.get_metric_history(run.id, "loss")] == [0, 2, 5]
    assert modelpack.get_run(run.id).metrics["acc"] == 0.5


def test_training_logger_marks_a_crashed_loop_failed(home):
    with pytest.raises(RuntimeError), TrainingLogger(experiment="t"):
        raise RuntimeError("diverged")
    assert modelpack.search_runs("t")[0].status == "FAILED"
