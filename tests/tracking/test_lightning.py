from __future__ import annotations

import pytest
import torch

import modelpack
from modelpack import tracking

pytest.importorskip("lightning")
import lightning.pytorch as pl

# Lightning warns about few dataloader workers and the like (advice, not errors here), and
# lightning 2.6 uses a torch pytree API that torch 2.13 deprecates.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]


class TinyModule(pl.LightningModule):
    def __init__(self, lr: float = 0.1, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def _loader():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    return torch.utils.data.DataLoader(data, batch_size=8)


def test_callback_logs_hparams_and_epoch_metrics(home):
    from modelpack.tracking.lightning import ModelpackCallback

    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[ModelpackCallback(experiment="lit", run_name="tiny")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(TinyModule(lr=0.05), _loader(), _loader())
    [run] = modelpack.search_runs("lit")
    assert run.status == "FINISHED" and run.name == "tiny"
    assert run.params == {"lr": "0.05", "hidden": "4", "max_epochs": "3"}
    for key in ("train_loss", "val_loss"):
        assert [m.step for m in tracking.get_metric_history(run.id, key)] == [0, 1, 2]
