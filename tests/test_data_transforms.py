"""Seeded transforms on single clouds and batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from act3d.data.transforms import (
    Compose,
    Jitter,
    Normalize,
    RandomPointDropout,
    RotateUp,
    ScaleTranslate,
    normalize_points,
)


def _cloud(b=None, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3) if b is None else (b, n, 3)
    return torch.rand(shape, generator=g) * 4 - 1


def test_normalize_unit_sphere_single_and_batched():
    x = _cloud(5) * torch.tensor([3.0, 1.0, 0.5]) + 7
    y = Normalize()(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(5, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.norm(dim=-1).amax(dim=1), torch.ones(5))
    torch.testing.assert_close(Normalize()(x[2]), y[2])
    flat = torch.zeros(10, 3)
    assert torch.equal(normalize_points(flat), flat)  # zero radius: centred, no NaN


def test_scale_translate_ranges_and_per_sample_params():
    x = torch.ones(64, 5, 3)
    y = ScaleTranslate()(x, generator=0)
    # constant clouds: y = scale + shift per sample and axis
    per_sample = y[:, 0, :]
    assert torch.equal(y, per_sample[:, None, :].expand_as(y))
    assert ((per_sample >= 2 / 3 - 0.2 - 1e-6) & (per_sample <= 1.5 + 0.2 + 1e-6)).all()
    assert per_sample.std(dim=0).min() > 0.05, "each sample needs its own parameters"
    zero = ScaleTranslate(translate=0.0)(torch.ones(256, 1, 3), generator=1)
    assert zero.min() >= 2 / 3 - 1e-6 and zero.max() <= 1.5 + 1e-6
    with pytest.raises(ValueError):
        ScaleTranslate(scale_low=2, scale_high=1)


@pytest.mark.parametrize("axis", ["x", "y", "z", 1])
def test_rotate_up_keeps_axis_and_distances(axis):
    x = _cloud(8)
    y = RotateUp(axis=axis)(x, generator=3)
    a = {"x": 0, "y": 1, "z": 2}.get(axis, axis)
    torch.testing.assert_close(y[..., a], x[..., a])
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    def pairwise(p):
        return (p[:, None, :] - p[None, :, :]).norm(dim=-1)

    torch.testing.assert_close(pairwise(y[0]), pairwise(x[0]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y, x)
    with pytest.raises(ValueError, match="axis must be one of"):
        RotateUp(axis="w")


def test_rotate_up_angle_matches_formula():
    x = torch.tensor([[[1.0, 0.0, 0.0]]])
    g = torch.Generator().manual_seed(5)
    angle = 2 * math.pi * torch.rand(1, generator=torch.Generator().manual_seed(5), dtype=torch.float64).item()
    y = RotateUp("y")(x, generator=g)[0, 0]
    # rotation about +y (right-handed) takes +x towards -z
    torch.testing.assert_close(y, torch.tensor([math.cos(angle), 0.0, -math.sin(angle)]), atol=1e-6, rtol=0)


def test_jitter_and_dropout():
    x = _cloud(4, n=500)
    y = Jitter(sigma=0.05, clip=0.02)(x, generator=0)
    d = y - x
    assert d.abs().max() <= 0.02 + 1e-6 and d.abs().mean() > 0.005
    x2 = _cloud(16, n=200)
    z = RandomPointDropout(max_ratio=0.8)(x2, generator=0)
    assert z.shape == x2.shape
    moved = (z != x2).any(dim=-1)
    # dropped points are replaced by each cloud's first point
    assert torch.equal(z[moved], x2[:, :1, :].expand_as(x2)[moved])
    frac = moved.float().mean(dim=1)
    assert frac.max() <= 0.95 and frac.std() > 0.05


def test_seeding_generators_and_determinism():
    x = _cloud(3)
    t = Compose([Normalize(), ScaleTranslate(), RotateUp(), Jitter()])
    a = t(x, generator=torch.Generator().manual_seed(7))
    b = t(x, generator=torch.Generator().manual_seed(7))
    c = t(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    n1 = t(x, generator=np.random.default_rng(7))
    n2 = t(x, generator=np.random.default_rng(7))
    assert torch.equal(n1, n2)
    own1, own2 = ScaleTranslate(seed=11), ScaleTranslate(seed=11)
    assert torch.equal(own1(x), own2(x))
    assert not torch.equal(own1(x), own1(x)), "the own generator advances between calls"
    # a plain callable inside Compose
    shifted = Compose([lambda p: p + 1.0])(x)
    assert torch.equal(shifted, x + 1.0)


def test_device_dtype_preserved_and_bad_input():
    x = _cloud(2).double()
    y = ScaleTranslate()(x, generator=0)
    assert y.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(N, 3\) or \(B, N, 3\)"):
        Normalize()(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="floating-point"):
        Jitter()(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="generator must be"):
        Jitter()(torch.zeros(4, 3), generator="seed")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu_with_a_cpu_generator():
    x = _cloud(4)
    t = Compose([ScaleTranslate(), RotateUp(), Jitter(), RandomPointDropout()])
    cpu = t(x, generator=torch.Generator().manual_seed(0))
    gpu = t(x.cuda(), generator=torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
