"""Tracking for plain PyTorch loops: per-step and per-epoch loss and user metrics.

Values may be Python numbers or one-element tensors (``.item()`` is called); torch itself is
not imported here.

    with TrainingLogger(experiment="mnist") as tracker:
        for epoch in range(epochs):
            for x, y in loader:
                loss = ...
                tracker.step(loss=loss)
            tracker.end_epoch(val_accuracy=accuracy)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from modelpack.tracking import fluent


def _scalar(value: Any) -> float:
    item = getattr(value, "item", None)
    return float(item() if callable(item) else value)


def log_epoch(epoch: int, loss: Any = None, **metrics: Any) -> None:
    """Log ``loss`` and ``metrics`` of one epoch at step ``epoch`` to the active run."""
    values = {"loss": loss, **metrics} if loss is not None else metrics
    fluent.log_metrics({key: _scalar(value) for key, value in values.items()}, step=epoch)


class TrainingLogger:
    """Logs each ``step`` at the global step and, per epoch, the mean of the step values
    (as ``epoch_<name>``) plus the metrics given to ``end_epoch``, at step = epoch.

    Used as a context manager it starts a run when none is active and ends it afterwards.
    ``log_every`` thins per-step logging; epoch means still use every step.
    """

    def __init__(
        self,
        *,
        experiment: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        log_every: int = 1,
    ) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.log_every = max(1, int(log_every))
        self.global_step = 0
        self.epoch = 0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._owned: fluent.ActiveRun | None = None

    def __enter__(self) -> TrainingLogger:
        if fluent.active_run() is None:
            self._owned = fluent.start_run(self.experiment, run_name=self.run_name)
        if self.params:
            fluent.log_params(self.params)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned is not None:
            self._owned.__exit__(exc_type, exc, tb)
            self._owned = None
        else:
            fluent.flush()

    def step(self, **metrics: Any) -> None:
        values = {key: _scalar(value) for key, value in metrics.items()}
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1
        if self.global_step % self.log_every == 0:
            fluent.log_metrics(values, step=self.global_step)
        self.global_step += 1

    def end_epoch(self, **metrics: Any) -> None:
        means = {f"epoch_{key}": total / self._counts[key] for key, total in self._sums.items()}
        fluent.log_metrics(means, step=self.epoch)
        log_epoch(self.epoch, **metrics)
        self._sums.clear()
        self._counts.clear()
        self.epoch += 1
