"""A real ``transformers.Trainer`` (a tiny BERT, a few dozen tokenized sentences, six steps on
the CPU) logs its arguments, per-step losses and eval metrics through ``ModelpackCallback``,
given explicitly or added by ``modelpack.autolog()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")  # what the Trainer runs on

from torch.utils.data import Dataset  # noqa: E402

import modelpack  # noqa: E402
from modelpack import tracking  # noqa: E402
from modelpack.tracking._store import Run  # noqa: E402
from modelpack.tracking.transformers import ModelpackCallback, training_params  # noqa: E402

STEPS = 6
SENTENCES = [
    "i love this movie",
    "what a great film",
    "this film was terrible",
    "i hated every minute",
    "the cat sat on the mat",
    "a dog ran in the park",
]


class Tokenized(Dataset[dict[str, Any]]):
    """A few dozen sentences as token ids of one length, each with a label."""

    def __init__(self, tokenizer: Any, copies: int) -> None:
        texts = SENTENCES * copies
        self.encoded = tokenizer(texts, padding="max_length", max_length=12, truncation=True)
        self.labels = [i % 2 for i in range(len(texts))]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: torch.tensor(v[i]) for k, v in self.encoded.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]"
    )


def _trainer(out: Path, callbacks: list[Any] | None = None, **arguments: Any) -> Any:
    tokenizer = _tokenizer()
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    settings: dict[str, Any] = {"eval_strategy": "steps", "eval_steps": 3, **arguments}
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **settings,
    )
    return transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=Tokenized(tokenizer, 4),
        eval_dataset=Tokenized(tokenizer, 1),
        callbacks=callbacks,
    )


def _steps(run: Run, key: str) -> list[int]:
    return [m.step for m in tracking.get_metric_history(run.id, key)]


def test_callback_logs_arguments_step_losses_and_eval_metrics(home: Path, tmp_path: Path) -> None:
    callback = ModelpackCallback(experiment="bert", run_name="tiny")
    trainer = _trainer(tmp_path / "out", [callback], learning_rate=1e-3)
    trainer.train()
    [run] = modelpack.search_runs()
    assert run.status == "FINISHED" and run.name == "tiny" and run.experiment == "bert"
    assert run.params["learning_rate"] == "0.001" and run.params["max_steps"] == str(STEPS)
    assert run.params["use_cpu"] == "True" and run.params["report_to"] == "[]"
    assert _steps(run, "loss") == list(range(1, STEPS + 1))
    assert _steps(run, "learning_rate") == list(range(1, STEPS + 1))
    assert _steps(run, "eval_loss") == [3, 6]  # logged once each, not again by on_evaluate
    assert "train_loss" in run.metrics and "eval_runtime" in run.metrics
    assert tracking.active_run() is None


def test_an_active_run_is_joined_left_open_and_gets_a_later_evaluate(
    home: Path, tmp_path: Path
) -> None:
    trainer = _trainer(tmp_path / "out", [ModelpackCallback()], eval_strategy="no")
    with modelpack.start_run(experiment="mine") as active:
        trainer.train()
        assert tracking.active_run() is active
        trainer.evaluate()
    [run] = modelpack.search_runs()
    assert run.id == active.id and run.status == "FINISHED"
    assert _steps(run, "loss") == list(range(1, STEPS + 1))
    assert _steps(run, "eval_loss") == [STEPS]


def test_params_are_flat_json_values_truncated(tmp_path: Path) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        lr_scheduler_kwargs={"power": 2.0, "nested": {"deep": 1}},
        run_name="r" * 1500,
        report_to=[],
        use_cpu=True,
    )
    params = training_params(args)
    assert params["lr_scheduler_kwargs.power"] == "2.0"
    assert params["lr_scheduler_kwargs.nested.deep"] == "1"
    assert params["run_name"] == "r" * 1000
    assert params["hub_token"] == "<HUB_TOKEN>"  # masked by TrainingArguments.to_dict
    assert all(isinstance(v, str) for v in params.values())


def test_autolog_adds_the_callback_to_every_trainer_until_disabled(
    home: Path, tmp_path: Path
) -> None:
    original = transformers.Trainer.__init__
    modelpack.autolog(experiment="auto")
    assert transformers.Trainer.__init__ is not original
    explicit = ModelpackCallback(run_name="mine")
    kept = _trainer(tmp_path / "kept", [explicit])
    ours = [c for c in kept.callback_handler.callbacks if isinstance(c, ModelpackCallback)]
    assert ours == [explicit]  # one given explicitly is not doubled

    _trainer(tmp_path / "auto", eval_strategy="no").train()
    [run] = modelpack.search_runs()
    assert run.status == "FINISHED" and run.experiment == "auto"
    assert run.params["max_steps"] == str(STEPS)
    assert _steps(run, "loss") == list(range(1, STEPS + 1))

    modelpack.autolog(disable=True)
    assert transformers.Trainer.__init__ is original
    plain = _trainer(tmp_path / "plain", eval_strategy="no")
    assert not any(isinstance(c, ModelpackCallback) for c in plain.callback_handler.callbacks)
    plain.train()
    assert len(modelpack.search_runs()) == 1
