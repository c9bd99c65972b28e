"""The teacher stage reaches the published accuracy on real Cora."""
from __future__ import annotations

from functools import partial

import lightning as L
import torch

from datamodules.planetoid import PlanetoidDataModule
from lightning_modules.node_classifier import NodeClassifier
from tests.datamodules.test_planetoid import copy_planetoid


def test_gcn_teacher_on_real_cora_reaches_78_percent(shared_assets, tmp_path):
    L.seed_everything(0)
    dm = PlanetoidDataModule("Cora", root=str(copy_planetoid(shared_assets, tmp_path, "Cora")))
    model = NodeClassifier(dm.num_features, dm.num_classes, dm.graph_info, arch="gcn", hidden_channels=64,
                           num_layers=2, dropout=0.5,
                           optimizer=partial(torch.optim.Adam, lr=0.01, weight_decay=5e-4))
    trainer = L.Trainer(max_epochs=200, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, check_val_every_n_epoch=50, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    accuracy = trainer.test(model, dm, verbose=False)[0]["test/acc"]
    print(f"GCN on Cora: test accuracy {accuracy:.3f} (Kipf & Welling report 0.815)")
    assert accuracy >= 0.78
