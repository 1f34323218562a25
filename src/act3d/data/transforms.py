"""Seeded point-cloud transforms for single clouds and batches, on any device.

Every transform takes ``points`` as a float tensor of shape (N, 3) or (B, N, 3) and returns
the same shape.  Random transforms draw *per-sample* parameters (one scale, angle ...
per cloud of the batch), so training loops call them on collated GPU batches.

Randomness: ``t(points, generator=g)`` with ``g`` a ``torch.Generator`` (on any device;
draws happen on the generator's device, then move to the points), a
``numpy.random.Generator`` or an ``int`` seed.  Without ``generator`` the transform uses its
own generator made from ``seed=`` at construction, or torch's global RNG when ``seed`` was
``None``.  Given the same generator state the result is identical on CPU and GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Union

import numpy as np
import torch

__all__ = [
    "Transform",
    "Normalize",
    "ScaleTranslate",
    "RotateUp",
    "Jitter",
    "RandomPointDropout",
    "Compose",
    "normalize_points",
    "GeneratorLike",
]

GeneratorLike = Union[torch.Generator, np.random.Generator, int, None]


def _as_generator(generator: GeneratorLike) -> torch.Generator | np.random.Generator | None:
    if isinstance(generator, bool):
        raise ValueError("generator must be a torch/numpy Generator or an int seed, not a bool")
    if isinstance(generator, (int, np.integer)):
        return torch.Generator().manual_seed(int(generator))
    if generator is None or isinstance(generator, (torch.Generator, np.random.Generator)):
        return generator
    raise ValueError(
        f"generator must be a torch.Generator, numpy Generator, int or None, got {type(generator)}"
    )


def _rand(gen, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` as ``like``'s dtype/device."""
    if isinstance(gen, np.random.Generator):
        out = torch.from_numpy(gen.random(shape))
    elif isinstance(gen, torch.Generator):
        out = torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float64)
    else:
        out = torch.rand(shape, dtype=torch.float64, device=like.device)
    return out.to(device=like.device, dtype=like.dtype)


def _randn(gen, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Standard-normal draws of ``shape`` as ``like``'s dtype/device."""
    if isinstance(gen, np.random.Generator):
        out = torch.from_numpy(gen.standard_normal(shape))
    elif isinstance(gen, torch.Generator):
        out = torch.randn(shape, generator=gen, device=gen.device, dtype=torch.float64)
    else:
        out = torch.randn(shape, dtype=torch.float64, device=like.device)
    return out.to(device=like.device, dtype=like.dtype)


def _check_points(points: torch.Tensor) -> None:
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"points must be a torch.Tensor of shape (N, 3) or (B, N, 3), got {type(points)}")
    if points.dim() not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (N, 3) or (B, N, 3), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be a floating-point tensor, got {points.dtype}")


def normalize_points(points: torch.Tensor) -> torch.Tensor:
    """Centre each cloud on its centroid and scale its max radius to 1.

    points: (N, 3) or (B, N, 3) -> same shape. A cloud with zero radius is only centred.
    """
    _check_points(points)
    centred = points - points.mean(dim=-2, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1)
    return centred / torch.where(radius > 0, radius, torch.ones_like(radius))


class Transform:
    """Base class: ``__call__(points, generator=None)``; subclasses implement ``_apply``.

    Args:
        seed: seed of the transform's own generator, used when no generator is passed at
            call time; ``None`` uses torch's global RNG.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def __call__(self, points: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        _check_points(points)
        gen = _as_generator(generator) if generator is not None else self._generator
        batched = points.dim() == 3
        out = self._apply(points if batched else points.unsqueeze(0), gen)
        return out if batched else out.squeeze(0)

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:  # (B, N, 3) -> (B, N, 3)
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Normalize(Transform):
    """Subtract the centroid and divide by the max radius (deterministic)."""

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:
        return normalize_points(points)


class ScaleTranslate(Transform):
    """Per-axis scale ``U(scale_low, scale_high)`` then per-axis shift ``U(-translate, translate)``.

    One draw of 3 scales and 3 shifts per cloud (the reference's ModelNet/ShapeNet
    augmentation: scale U(2/3, 3/2), shift U(-0.2, 0.2)).
    """

    def __init__(
        self, scale_low: float = 2.0 / 3.0, scale_high: float = 1.5, translate: float = 0.2,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not 0 < scale_low <= scale_high:
            raise ValueError(f"need 0 < scale_low <= scale_high, got {scale_low}, {scale_high}")
        if translate < 0:
            raise ValueError(f"translate must be >= 0, got {translate}")
        self.scale_low, self.scale_high, self.translate = scale_low, scale_high, translate

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:
        b = points.shape[0]
        scale = self.scale_low + (self.scale_high - self.scale_low) * _rand(gen, (b, 1, 3), points)
        shift = self.translate * (2.0 * _rand(gen, (b, 1, 3), points) - 1.0)
        return points * scale + shift


_AXES = {"x": 0, "y": 1, "z": 2}


class RotateUp(Transform):
    """Random rotation about the up axis by an angle ``U(0, max_angle)`` per cloud.

    Args:
        axis: ``"x"``, ``"y"`` (default; ShapeNet/ScanObjectNN are y-up) or ``"z"``, or 0/1/2.
        max_angle: upper bound of the angle in radians (default a full turn).
    """

    def __init__(
        self, axis: str | int = "y", max_angle: float = 2.0 * math.pi, seed: int | None = None
    ) -> None:
        super().__init__(seed)
        if isinstance(axis, str):
            if axis.lower() not in _AXES:
                raise ValueError(f"axis must be one of {sorted(_AXES)} or 0/1/2, got {axis!r}")
            axis = _AXES[axis.lower()]
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be one of {sorted(_AXES)} or 0/1/2, got {axis!r}")
        self.axis, self.max_angle = int(axis), float(max_angle)

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:
        b = points.shape[0]
        angle = self.max_angle * _rand(gen, (b,), points)
        c, s = torch.cos(angle), torch.sin(angle)
        i, j = [a for a in (0, 1, 2) if a != self.axis]
        if self.axis == 1:  # keep the right-handed sense: rotating z towards x
            i, j = j, i
        out = points.clone()
        pi, pj = points[..., i], points[..., j]
        out[..., i] = c[:, None] * pi - s[:, None] * pj
        out[..., j] = s[:, None] * pi + c[:, None] * pj
        return out


class Jitter(Transform):
    """Add Gaussian noise ``N(0, sigma^2)`` per coordinate, clipped to ``[-clip, clip]``."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        if sigma < 0 or clip <= 0:
            raise ValueError(f"need sigma >= 0 and clip > 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip = float(sigma), float(clip)

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:
        noise = (self.sigma * _randn(gen, tuple(points.shape), points)).clamp(-self.clip, self.clip)
        return points + noise


class RandomPointDropout(Transform):
    """Drop a random fraction ``U(0, max_ratio)`` of each cloud's points.

    Dropped points are replaced by the cloud's first point, so the shape stays (B, N, 3)
    and batches stay rectangular.
    """

    def __init__(self, max_ratio: float = 0.875, seed: int | None = None) -> None:
        super().__init__(seed)
        if not 0 <= max_ratio < 1:
            raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio}")
        self.max_ratio = float(max_ratio)

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:
        b, n, _ = points.shape
        ratio = self.max_ratio * _rand(gen, (b, 1), points)
        drop = _rand(gen, (b, n), points) <= ratio
        return torch.where(drop.unsqueeze(-1), points[:, :1, :].expand_as(points), points)


class Compose(Transform):
    """Apply transforms in order, passing the same generator along.

    Plain callables (not :class:`Transform`) are called as ``fn(points)``.
    """

    def __init__(self, transforms: Sequence[Callable], seed: int | None = None) -> None:
        super().__init__(seed)
        self.transforms = list(transforms)

    def _apply(self, points: torch.Tensor, gen) -> torch.Tensor:
        for t in self.transforms:
            points = t(points, generator=gen) if isinstance(t, Transform) else t(points)
        return points

    def __call__(self, points: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        _check_points(points)
        gen = _as_generator(generator) if generator is not None else self._generator
        return self._apply(points, gen)
