"""Tracking for the HuggingFace ``Trainer``: a callback, and ``autolog()`` adding it to every one.

trainer = transformers.Trainer(..., callbacks=[ModelpackCallback(experiment="bert")])

The TrainingArguments become params, every numeric value the Trainer logs a metric at its global
step (``loss``, ``learning_rate``, ``eval_loss``...). Only the main process logs. Tracking
failures are logged and never fail a training.
"""

from __future__ import annotations

import functools
import json
import numbers
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from modelpack.tracking import _autolog, _store, fluent
from modelpack.tracking.sklearn import PARAM_CHARS, _safely

_JSON_SCALARS = (str, int, float, bool, type(None))


class ModelpackCallback(TrainerCallback):
    """Logs the TrainingArguments as params and the Trainer's logs as metrics.

    Starts a run at train begin when none is active (named ``run_name``, else the arguments'
    ``run_name``) and ends it FINISHED at train end; an already active run is logged to and left
    open. A training that raises leaves its run RUNNING: the next ``train`` ends it FAILED.
    """

    def __init__(self, *, experiment: str | None = None, run_name: str | None = None) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self._owned: fluent.ActiveRun | None = None
        self._last_logged: tuple[int, frozenset[str]] = (-1, frozenset())

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        if self._owned is not None:  # the previous train() of this Trainer raised
            self._owned.end("FAILED")
            self._owned = None
        if fluent.active_run() is None:
            name = self.run_name or (args.run_name or "")[: _store.KEY_MAX].strip() or None
            self._owned = _safely(
                "starting a run", lambda: fluent.start_run(self.experiment, run_name=name)
            )
        _safely("logging params", lambda: fluent.log_params(training_params(args)))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        values = _numbers(logs or {})
        self._last_logged = (state.global_step, frozenset(values))
        self._log(state, values)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Trainer.evaluate passes its metrics to on_log first: only what that did not log.
        step, logged = self._last_logged
        values = _numbers(metrics or {})
        self._log(
            state, {k: v for k, v in values.items() if step != state.global_step or k not in logged}
        )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._owned is not None:
            self._owned.end("FINISHED")
            self._owned = None
        elif state.is_world_process_zero and fluent.active_run() is not None:
            fluent.flush()

    def _log(self, state: TrainerState, values: Mapping[str, float]) -> None:
        # An evaluate() outside any run (after train() ended its own) has nowhere to go.
        if values and state.is_world_process_zero and fluent.active_run() is not None:
            _autolog.log_metrics_step(values, state.global_step)


def training_params(args: TrainingArguments) -> dict[str, str]:
    """``args.to_dict()`` flattened (``a.b``), JSON values only, each at most PARAM_CHARS."""
    params: dict[str, str] = {}
    to_dict: Any = args.to_dict  # untyped in transformers
    for key, value in _flatten(to_dict()).items():
        if isinstance(value, _JSON_SCALARS):
            text = str(value)
        else:
            try:
                text = json.dumps(value)
            except (TypeError, ValueError):  # a callable, a device, a config object...
                continue
        params[key] = text[:PARAM_CHARS]
    return params


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    return {
        str(key): float(value)
        for key, value in logs.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool)
    }


# -- autolog -----------------------------------------------------------------------------------

_experiment: str | None = None
_enabled = False
_patches = _autolog.Patches()


def autolog(*, disable: bool = False, experiment: str | None = None) -> None:
    """Add a ``ModelpackCallback`` to every ``Trainer`` created from now on (one given
    explicitly is kept); ``disable=True`` restores ``Trainer.__init__``."""
    global _enabled, _experiment
    if disable:
        _enabled = False
        _patches.undo()
        return
    from transformers import Trainer

    _enabled, _experiment = True, experiment
    if not _patches:
        _patches.replace(Trainer, "__init__", _with_callback(Trainer.__init__))


def _with_callback(init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        callbacks = self.callback_handler.callbacks
        if _enabled and not any(isinstance(c, ModelpackCallback) for c in callbacks):
            self.add_callback(ModelpackCallback(experiment=_experiment))

    return __init__
