"""Optimiser and learning-rate schedule: AdamW with decoupled decay, warm-up then cosine.

Weight-decay rule of :func:`param_groups` (the reference's, made explicit): a trainable
parameter gets **no** weight decay when

- it has at most one dimension (biases, norm scales), or
- its name ends with ``.bias``, or
- the last component of its name contains ``token`` or ``prompt`` (``cls_token``,
  ``mask_token``, prompt tokens and their positions), or
- its full name or last component is in ``no_decay_names`` (e.g. ``{"cls_pos"}``).

Parameters with ``requires_grad=False`` (a frozen teacher) are left out entirely.

The schedule is a pure function of the optimiser step, :func:`lr_at`, applied by
:class:`WarmupCosine` before every step, so resuming only needs the step counter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch import nn
from torch.optim import AdamW, Optimizer

from act3d.config import OptimConfig

__all__ = ["WarmupCosine", "build_optimizer", "lr_at", "param_groups", "wants_weight_decay"]


def wants_weight_decay(name: str, param: nn.Parameter, no_decay_names: Iterable[str] = ()) -> bool:
    """Whether parameter ``name`` is decayed under the rule in the module docstring."""
    skip = set(no_decay_names)
    last = name.rsplit(".", 1)[-1]
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    if "token" in last or "prompt" in last:
        return False
    return name not in skip and last not in skip


def param_groups(
    model: nn.Module, weight_decay: float, no_decay_names: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    Returns:
        One or two ``{"params": [...], "weight_decay": wd, "names": [...]}`` dicts (empty
        groups are dropped), in parameter-registration order.
    """
    skip = list(no_decay_names)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names_out: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if wants_weight_decay(name, param, skip):
            decay.append(param)
            decay_names.append(name)
        else:
            no_decay.append(param)
            no_decay_names_out.append(name)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names_out},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> Optimizer:
    """AdamW over ``groups`` (from :func:`param_groups`) with ``cfg``'s lr, betas and eps.

    A group may carry ``lr_scale`` (multiplies the scheduled lr) and its own
    ``weight_decay``; a group without ``weight_decay`` gets ``cfg.weight_decay``.
    """
    if cfg.name != "adamw":
        raise ValueError(f"unknown optimizer {cfg.name!r}; valid choices: 'adamw'")
    if not groups or not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_at(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, start_lr: float, min_lr: float
) -> float:
    """Learning rate of optimiser step ``step`` (0-based).

    Linear from ``start_lr`` (step 0) towards ``base_lr`` over ``warmup_steps`` steps, then
    cosine from ``base_lr`` down to ``min_lr`` at ``total_steps``; constant ``min_lr`` after.
    """
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    if step < warmup_steps:
        return start_lr + (base_lr - start_lr) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets each group's lr to ``lr_at(step) * group.get("lr_scale", 1)`` before every step.

    Call :meth:`step` after ``optimizer.step()``. ``state_dict`` holds the step counter and
    the schedule's parameters; loading checks that the parameters match.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        base_lr: float,
        start_lr: float,
        min_lr: float,
    ) -> None:
        self.optimizer = optimizer
        self.params = {
            "total_steps": int(total_steps),
            "warmup_steps": int(warmup_steps),
            "base_lr": float(base_lr),
            "start_lr": float(start_lr),
            "min_lr": float(min_lr),
        }
        lr_at(0, total_steps, warmup_steps, base_lr, start_lr, min_lr)
        self.last_step = 0
        self._apply()

    @classmethod
    def from_config(cls, optimizer: Optimizer, cfg: OptimConfig, steps_per_epoch: int) -> WarmupCosine:
        """The schedule of ``cfg`` with epochs converted to ``steps_per_epoch`` iterations."""
        return cls(
            optimizer,
            total_steps=cfg.epochs * steps_per_epoch,
            warmup_steps=cfg.warmup_epochs * steps_per_epoch,
            base_lr=cfg.lr,
            start_lr=cfg.warmup_start_lr,
            min_lr=cfg.min_lr,
        )

    def get_lr(self) -> float:
        """The unscaled lr of the current step."""
        p = self.params
        return lr_at(
            self.last_step, p["total_steps"], p["warmup_steps"], p["base_lr"], p["start_lr"], p["min_lr"]
        )

    def _apply(self) -> None:
        lr = self.get_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self) -> None:
        """Advance to the next optimiser step and set its lr."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, **self.params}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mismatched = {k: (state.get(k), v) for k, v in self.params.items() if state.get(k) != v}
        if mismatched:
            raise ValueError(f"schedule in the checkpoint differs from the config: {mismatched}")
        self.last_step = int(state["last_step"])
        self._apply()
