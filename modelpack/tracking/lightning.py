"""A PyTorch Lightning callback that logs hyperparameters and per-epoch metrics.

trainer = lightning.Trainer(callbacks=[ModelpackCallback(experiment="mnist")])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from modelpack.tracking import fluent
from modelpack.tracking.torch import _scalar


class ModelpackCallback(Callback):
    """Logs ``pl_module.hparams`` as params and ``trainer.callback_metrics`` at each epoch end.

    Starts a run at fit start when none is active, and ends it at fit end (FAILED on an
    exception); an already active run is logged to and left open.
    """

    def __init__(self, *, experiment: str | None = None, run_name: str | None = None) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self._owned: fluent.ActiveRun | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if fluent.active_run() is None:
            self._owned = fluent.start_run(self.experiment, run_name=self.run_name)
        params = _flatten(dict(pl_module.hparams))
        params["max_epochs"] = trainer.max_epochs
        fluent.log_params(params)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._owned is not None:
            self._owned.end("FINISHED")
            self._owned = None
        else:
            fluent.flush()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._owned is not None:
            status = "KILLED" if isinstance(exception, KeyboardInterrupt) else "FAILED"
            self._owned.end(status)
            self._owned = None

    def _log(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        values = {}
        for key, value in trainer.callback_metrics.items():
            try:
                values[key] = _scalar(value)
            except (TypeError, ValueError, RuntimeError):  # a non-scalar tensor
                continue
        fluent.log_metrics(values, step=trainer.current_epoch)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
