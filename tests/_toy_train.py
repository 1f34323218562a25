"""A toy task for the engine tests: a small MLP on seeded random data.

Imported by ``tests/test_engine.py`` and run as a script for the SIGKILL and torchrun tests::

    python tests/_toy_train.py --run-dir DIR [--resume DIR] [--kill-at-step N] [--set k=v ...]

The training set draws noise from torch, NumPy and Python's ``random`` in ``__getitem__`` and
the model has dropout, so every RNG matters for the loss curve.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from act3d.config import OptimConfig, RunConfig, RuntimeConfig, load_config
from act3d.train.engine import Task, fit


@dataclass
class ToyModelConfig:
    in_dim: int = 8
    hidden: int = 16
    classes: int = 3
    dropout: float = 0.2
    train_size: int = 64
    val_size: int = 33
    noise: float = 0.1
    augment: bool = True


@dataclass
class ToyConfig:
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1e-2, weight_decay=0.01, epochs=4, warmup_epochs=1, batch_size=16, min_lr=1e-4
        )
    )
    runtime: RuntimeConfig = field(default_factory=lambda: RuntimeConfig(device="cpu", threads=1, seed=3))
    run: RunConfig = field(
        default_factory=lambda: RunConfig(
            name="toy", best_metric="val/acc", best_mode="max", log_every=1, progress="log"
        )
    )


class ToyData(Dataset):
    """Fixed random inputs with labels from a fixed linear rule; noisy on every read."""

    def __init__(self, size: int, cfg: ToyModelConfig, seed: int, augment: bool) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, cfg.in_dim, generator=g)
        rule = torch.randn(cfg.in_dim, cfg.classes, generator=torch.Generator().manual_seed(0))
        self.y = (self.x @ rule).argmax(-1)
        self.noise = cfg.noise
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        x = self.x[i]
        if self.augment:
            scale = float(np.random.uniform(0.9, 1.1)) * random.uniform(0.95, 1.05)
            x = x * scale + self.noise * torch.randn_like(x)
        return {"x": x, "label": self.y[i]}


class ToyNet(nn.Module):
    def __init__(self, cfg: ToyModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.in_dim, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.hidden, cfg.classes)
        self.token = nn.Parameter(torch.zeros(1, cfg.hidden))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x) + self.token)))


class ToyTask(Task):
    def __init__(self, cfg: ToyConfig, kill_at_step: int | None = None) -> None:
        self.cfg = cfg
        self.kill_at_step = kill_at_step
        self.steps_seen: list[int] = []
        self.fit_end_called = False

    def build_model(self) -> nn.Module:
        return ToyNet(self.cfg.model)

    def train_dataset(self) -> Dataset:
        return ToyData(self.cfg.model.train_size, self.cfg.model, seed=1, augment=self.cfg.model.augment)

    def val_dataset(self) -> Dataset | None:
        return ToyData(self.cfg.model.val_size, self.cfg.model, seed=2, augment=False)

    def training_step(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(batch["x"])
        loss = F.cross_entropy(logits, batch["label"])
        return loss, {"acc": (logits.argmax(-1) == batch["label"]).float().mean()}

    def validation_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor | int]:
        logits = model(batch["x"])
        return {
            "count": len(logits),
            "loss": F.cross_entropy(logits, batch["label"], reduction="sum"),
            "acc": (logits.argmax(-1) == batch["label"]).sum(),
        }

    def on_step_start(self, model: nn.Module, step: int, total_steps: int) -> None:
        self.steps_seen.append(step)
        if self.kill_at_step is not None and step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_fit_end(self, model: nn.Module, run_dir) -> None:
        self.fit_end_called = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--kill-at-step", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_config(ToyConfig, None, args.overrides)
    fit(ToyTask(cfg, args.kill_at_step), cfg, stage="toy", run_dir=args.run_dir, resume=args.resume)


if __name__ == "__main__":
    main()
