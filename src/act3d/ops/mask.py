"""Random patch masking for masked point modelling."""

from __future__ import annotations

import torch

__all__ = ["random_mask"]


def random_mask(
    batch: int,
    num_groups: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-row uniformly random mask with exactly ``int(ratio * num_groups)`` True entries.

    Each row ranks uniform noise (argsort) and masks its first ``int(ratio * G)`` ranks, so
    every subset of that size is equally likely.

    Args:
        batch: number of rows B >= 1.
        num_groups: number of patches G >= 1.
        ratio: masked fraction in [0, 1].
        generator: optional torch.Generator (its device is used when ``device`` is None).
        device: device of the result.

    Returns:
        mask: (B, G) bool, True = masked.
    """
    for name, value in (("batch", batch), ("num_groups", num_groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be a float in [0, 1], got {ratio!r}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but device is {device}")
    num_masked = int(ratio * num_groups)
    noise = torch.rand(batch, num_groups, generator=generator, device=device)
    ranks = torch.argsort(noise, dim=1)
    mask = torch.zeros(batch, num_groups, dtype=torch.bool, device=device)
    mask.scatter_(1, ranks[:, :num_masked], True)
    return mask
