"""Tests for act3d.ops: fast paths (numba, torch) against the plain references."""

from __future__ import annotations

import pytest
import torch

from act3d import ops

BACKENDS = ["numba", "torch"]
DTYPES = [torch.float32, torch.float64]


def _cloud(b: int, n: int, dtype=torch.float32, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g, dtype=dtype).to(device)


def _grid_cloud(b: int, n: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    """Integer-lattice points with duplicates: many exactly equal distances (ties)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (b, n, 3), generator=g).to(dtype)


# ----------------------------------------------------------------------------- FPS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,n,m", [(1, 1, 1), (2, 17, 5), (3, 100, 100), (2, 300, 64), (2, 2000, 128)])
def test_fps_backends_match_naive(b, n, m, dtype):
    points = _cloud(b, n, dtype, seed=n)
    ref = ops.farthest_point_sample_naive(points, m)
    for backend in BACKENDS:
        idx = ops.farthest_point_sample(points, m, backend=backend)
        assert idx.dtype == torch.int64 and idx.shape == (b, m)
        assert torch.equal(idx, ref), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_fps_start_and_definition(backend):
    points = _cloud(2, 200, torch.float64, seed=1)
    idx = ops.farthest_point_sample(points, 20, start=7, backend=backend)
    assert torch.equal(idx, ops.farthest_point_sample_naive(points, 20, start=7))
    assert (idx[:, 0] == 7).all()
    for cloud, chosen in zip(points, idx):
        for i in range(1, 20):
            d = torch.cdist(cloud, cloud[chosen[:i]]).min(dim=1).values
            assert d[chosen[i]] == d.max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fps_ties_and_duplicates(dtype):
    points = _grid_cloud(3, 500, dtype, seed=2)
    ref = ops.farthest_point_sample_naive(points, 80)
    for backend in BACKENDS:
        assert torch.equal(ops.farthest_point_sample(points, 80, backend=backend), ref), backend
    same = torch.ones(1, 40, 3, dtype=dtype)
    expected = torch.zeros(1, 40, dtype=torch.int64)
    expected[0, 0] = 5
    for backend in BACKENDS:
        assert torch.equal(ops.farthest_point_sample(same, 40, start=5, backend=backend), expected)


def test_fps_m_equals_n_is_permutation():
    points = _cloud(2, 300, seed=3)
    idx = ops.farthest_point_sample(points, 300)
    assert torch.equal(idx.sort(dim=1).values, torch.arange(300).expand(2, 300))


def test_fps_large_offset_and_noncontiguous():
    points = _cloud(2, 400, seed=4) * 1e-3 + 1000.0
    ref = ops.farthest_point_sample_naive(points, 50)
    assert torch.equal(ops.farthest_point_sample(points, 50, backend="numba"), ref)
    view = _cloud(3, 400, seed=5).transpose(0, 1).contiguous().transpose(0, 1)
    assert not view.is_contiguous()
    assert torch.equal(
        ops.farthest_point_sample(view, 30, backend="numba"), ops.farthest_point_sample_naive(view, 30)
    )


def test_threads_do_not_change_results(monkeypatch):
    from act3d.ops import _numba_kernels

    monkeypatch.setattr(_numba_kernels, "_MIN_PARALLEL_S", 0.0)
    points = _cloud(5, 300, seed=6)
    query = _cloud(5, 150, seed=7)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                (
                    ops.farthest_point_sample(points, 40, backend="numba"),
                    *ops.knn(query, points, 8, backend="numba"),
                    ops.chamfer_distance(query, points, reduction="none", backend="numba"),
                )
            )
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results):
        assert torch.equal(one, two)


# ----------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,m,n,k", [(1, 1, 1, 1), (2, 10, 37, 5), (2, 64, 1024, 32), (3, 50, 50, 50), (1, 130, 3000, 7)])
def test_knn_numba_matches_naive_exactly(b, m, n, k, dtype):
    points = _cloud(b, n, dtype, seed=n)
    query = _cloud(b, m, dtype, seed=n + 1)
    d_ref, i_ref = ops.knn_naive(query, points, k)
    dist2, idx = ops.knn(query, points, k, backend="numba")
    assert idx.dtype == torch.int64 and idx.shape == (b, m, k) and dist2.shape == (b, m, k)
    assert torch.equal(idx, i_ref)
    assert torch.equal(dist2, d_ref)
    assert (dist2[..., 1:] >= dist2[..., :-1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,m,n,k", [(2, 10, 37, 5), (2, 64, 1024, 32), (3, 50, 50, 50)])
def test_knn_torch_matches_naive(b, m, n, k, dtype):
    points = _cloud(b, n, dtype, seed=n)
    query = _cloud(b, m, dtype, seed=n + 1)
    d_ref, i_ref = ops.knn_naive(query, points, k)
    dist2, idx = ops.knn(query, points, k, backend="torch")
    torch.testing.assert_close(dist2, d_ref)
    # indices equal up to ties: where they differ, the distances must agree
    differ = idx != i_ref
    assert differ.float().mean() < 0.01
    torch.testing.assert_close(dist2[differ], d_ref[differ])


def test_knn_ties_lowest_index_first():
    points = _grid_cloud(2, 400, torch.float32, seed=7)
    query = _grid_cloud(2, 60, torch.float32, seed=8) + 0.5 * (torch.arange(3) == 0)
    for k in (1, 9, 40):
        d_ref, i_ref = ops.knn_naive(query, points, k)
        dist2, idx = ops.knn(query, points, k, backend="numba")
        assert torch.equal(idx, i_ref), k
        assert torch.equal(dist2, d_ref), k
        d_t, _ = ops.knn(query, points, k, backend="torch")
        torch.testing.assert_close(d_t, d_ref)


def test_knn_point_is_its_own_nearest_neighbour():
    points = _cloud(2, 500, seed=9)
    for backend in BACKENDS:
        dist2, idx = ops.knn(points, points, 4, backend=backend)
        assert torch.equal(idx[..., 0], torch.arange(500).expand(2, 500))
        assert (dist2[..., 0] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_gradcheck(backend):
    query = _cloud(2, 4, torch.float64, seed=10).requires_grad_()
    points = _cloud(2, 9, torch.float64, seed=11).requires_grad_()
    assert torch.autograd.gradcheck(lambda q, p: ops.knn(q, p, 3, backend=backend)[0], (query, points))


# ----------------------------------------------------------------------------- gather / group


def test_gather_points_shapes_and_values():
    points = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 5, 4)
    idx = torch.tensor([[[0, 4], [1, 1], [3, 2]], [[4, 4], [0, 1], [2, 3]]])
    out = ops.gather_points(points, idx)
    assert out.shape == (2, 3, 2, 4)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                assert torch.equal(out[b, i, j], points[b, idx[b, i, j]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_properties(backend):
    points = _cloud(3, 256, seed=12)
    patches, centers, cidx, nidx = ops.group_with_index(points, 16, 8, backend=backend)
    assert patches.shape == (3, 16, 8, 3) and centers.shape == (3, 16, 3)
    assert cidx.shape == (3, 16) and nidx.shape == (3, 16, 8)
    assert torch.equal(cidx, ops.farthest_point_sample(points, 16))
    assert torch.equal(centers, ops.gather_points(points, cidx))
    assert torch.equal(nidx[..., 0], cidx)
    assert (patches[:, :, 0] == 0).all()
    torch.testing.assert_close(patches, ops.gather_points(points, nidx) - centers[:, :, None])
    p2, c2 = ops.group(points, 16, 8, backend=backend)
    assert torch.equal(p2, patches) and torch.equal(c2, centers)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_group_matches_naive(dtype, requires_grad):
    points = _cloud(2, 300, dtype, seed=13)
    ref_p, ref_c = ops.group_naive(points, 20, 12)
    points.requires_grad_(requires_grad)
    for backend in BACKENDS:
        patches, centers = ops.group(points, 20, 12, backend=backend)
        assert patches.requires_grad == requires_grad
        assert torch.equal(centers, ref_c)
        assert torch.equal(patches, ref_p)


def test_group_is_differentiable():
    points = _cloud(2, 64, torch.float64, seed=14).requires_grad_()
    patches, centers = ops.group(points, 8, 4)
    (patches.square().sum() + centers.sum()).backward()
    assert points.grad is not None and torch.isfinite(points.grad).all()


# ----------------------------------------------------------------------------- Chamfer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("b,n,m", [(1, 1, 1), (2, 31, 17), (4, 256, 300)])
def test_chamfer_backends_match_naive(b, n, m, norm, dtype):
    a0 = _cloud(b, n, dtype, seed=n)
    b0 = _cloud(b, m, dtype, seed=m + 100)
    a_ref = a0.clone().requires_grad_()
    b_ref = b0.clone().requires_grad_()
    ref = ops.chamfer_distance_naive(a_ref, b_ref, norm=norm, reduction="none")
    ref.sum().backward()
    for backend in BACKENDS:
        a1 = a0.clone().requires_grad_()
        b1 = b0.clone().requires_grad_()
        out = ops.chamfer_distance(a1, b1, norm=norm, reduction="none", backend=backend)
        assert out.shape == (b,)
        torch.testing.assert_close(out, ref)
        out.sum().backward()
        torch.testing.assert_close(a1.grad, a_ref.grad)
        torch.testing.assert_close(b1.grad, b_ref.grad)


def test_chamfer_formula_and_reduction():
    a = torch.tensor([[[0.0, 0, 0], [2, 0, 0]]])
    b = torch.tensor([[[0.0, 1, 0]]])
    # a->b squared distances: 1, 5; b->a: 1
    l2 = ops.chamfer_distance(a, b, norm=2)
    torch.testing.assert_close(l2, torch.tensor((1 + 5) / 2 + 1.0))
    l1 = ops.chamfer_distance(a, b, norm=1)
    torch.testing.assert_close(l1, torch.tensor(((1 + 5**0.5) / 2 + 1) / 2))
    both = torch.cat([a, a + 1])
    per = ops.chamfer_distance(both, torch.cat([b, b + 1]), reduction="none")
    assert per.shape == (2,)
    torch.testing.assert_close(ops.chamfer_distance(both, torch.cat([b, b + 1])), per.mean())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", [1, 2])
def test_chamfer_gradcheck(backend, norm):
    a = _cloud(2, 6, torch.float64, seed=15).requires_grad_()
    b = _cloud(2, 5, torch.float64, seed=16).requires_grad_()
    fn = lambda x, y: ops.chamfer_distance(x, y, norm=norm, reduction="none", backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_chamfer_zero_distance_has_finite_grad(backend):
    a = _cloud(2, 20, seed=17)
    b = a.clone().requires_grad_()
    a = a.requires_grad_()
    out = ops.chamfer_distance(a, b, norm=1, backend=backend)
    out.backward()
    assert out.item() == 0.0
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_chamfer_ties_on_lattice():
    a = _grid_cloud(2, 200, torch.float64, seed=18)
    b = _grid_cloud(2, 150, torch.float64, seed=19) + 0.5
    ref = ops.chamfer_distance_naive(a, b, norm=1, reduction="none")
    for backend in BACKENDS:
        torch.testing.assert_close(ops.chamfer_distance(a, b, norm=1, reduction="none", backend=backend), ref)


def _distributions(seed: int) -> dict[str, torch.Tensor]:
    """Awkward clouds (2, 600, 3) float32: clusters, a plane, tiny and huge scales."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(2, 4, 1, 3, generator=g) * 5
    clusters = (centers + 0.01 * torch.randn(2, 4, 150, 3, generator=g)).reshape(2, 600, 3)
    plane = torch.rand(2, 600, 3, generator=g) * torch.tensor([1.0, 1.0, 0.0])
    base = torch.rand(2, 600, 3, generator=g)
    return {"clusters": clusters, "plane": plane, "tiny": base * 1e-6, "huge": base * 1e4 - 3e3}


@pytest.mark.parametrize("name", ["clusters", "plane", "tiny", "huge"])
def test_numba_kernels_exact_on_awkward_clouds(name):
    from act3d.ops._numba_kernels import _nn_idx_numba

    points = _distributions(22)[name]
    query = points.flip(1)[:, :100] + 1e-3 * points.std()
    assert torch.equal(ops.farthest_point_sample(points, 100, backend="numba"), ops.farthest_point_sample_naive(points, 100))
    d, i = ops.knn(query, points, 16, backend="numba")
    d_ref, i_ref = ops.knn_naive(query, points, 16)
    assert torch.equal(i, i_ref) and torch.equal(d, d_ref)
    ab, ba = _nn_idx_numba(query, points)
    assert torch.equal(ab, ops.knn_naive(query, points, 1)[1][..., 0])
    assert torch.equal(ba, ops.knn_naive(points, query, 1)[1][..., 0])


# ----------------------------------------------------------------------------- mask


@pytest.mark.parametrize("b,g,ratio", [(1, 1, 0.0), (4, 64, 0.8), (3, 10, 1.0), (2, 7, 0.5)])
def test_random_mask_exact_counts(b, g, ratio):
    mask = ops.random_mask(b, g, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (b, g)
    assert (mask.sum(1) == int(ratio * g)).all()


def test_random_mask_reproducible_and_uniform():
    m1 = ops.random_mask(2000, 10, 0.3, generator=torch.Generator().manual_seed(1))
    m2 = ops.random_mask(2000, 10, 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m1, m2)
    freq = m1.float().mean(0)
    assert ((freq - 0.3).abs() < 0.05).all()
    assert len({tuple(r.tolist()) for r in m1}) > 100


# ----------------------------------------------------------------------------- validation


BAD_CALLS = [
    (lambda: ops.farthest_point_sample(torch.zeros(10, 3), 2), "points"),
    (lambda: ops.farthest_point_sample(torch.zeros(1, 10, 2), 2), "points"),
    (lambda: ops.farthest_point_sample(torch.zeros(1, 10, 3, dtype=torch.int64), 2), "points"),
    (lambda: ops.farthest_point_sample(torch.zeros(1, 10, 3), 11), "m"),
    (lambda: ops.farthest_point_sample(torch.zeros(1, 10, 3), 0), "m"),
    (lambda: ops.farthest_point_sample(torch.zeros(1, 10, 3), 2, start=10), "start"),
    (lambda: ops.farthest_point_sample(torch.full((1, 10, 3), float("nan")), 2), "points"),
    (lambda: ops.farthest_point_sample_naive(torch.zeros(1, 10, 3), 11), "m"),
    (lambda: ops.farthest_point_sample(torch.zeros(1, 10, 3), 2, backend="cuda"), "backend"),
    (lambda: ops.knn(torch.zeros(1, 4, 3), torch.zeros(1, 10, 3), 11), "k"),
    (lambda: ops.knn(torch.zeros(1, 4, 3), torch.zeros(1, 10, 3), 0), "k"),
    (lambda: ops.knn(torch.zeros(2, 4, 3), torch.zeros(1, 10, 3), 2), "points"),
    (lambda: ops.knn(torch.zeros(1, 4, 3), torch.zeros(1, 10, 3, dtype=torch.float64), 2), "points"),
    (lambda: ops.knn(torch.zeros(1, 4, 4), torch.zeros(1, 10, 3), 2), "query"),
    (lambda: ops.knn(torch.zeros(1, 4, 3), torch.full((1, 10, 3), float("inf")), 2), "points"),
    (lambda: ops.knn_naive(torch.zeros(1, 4, 3), torch.zeros(1, 10, 3), 11), "k"),
    (lambda: ops.group(torch.zeros(1, 10, 3), 11, 2), "num_groups"),
    (lambda: ops.group(torch.zeros(1, 10, 3), 2, 11), "group_size"),
    (lambda: ops.group_naive(torch.zeros(1, 10, 3), 2, 0), "group_size"),
    (lambda: ops.chamfer_distance(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), norm=3), "norm"),
    (lambda: ops.chamfer_distance(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), reduction="sum"), "reduction"),
    (lambda: ops.chamfer_distance(torch.zeros(1, 4, 3), torch.zeros(2, 5, 3)), "b"),
    (lambda: ops.chamfer_distance(torch.zeros(4, 3), torch.zeros(1, 5, 3)), "a"),
    (lambda: ops.chamfer_distance_naive(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), norm=0), "norm"),
    (lambda: ops.gather_points(torch.zeros(1, 5, 2), torch.zeros(1, 3, dtype=torch.int32)), "idx"),
    (lambda: ops.gather_points(torch.zeros(1, 5, 2), torch.full((1, 3), 5)), "idx"),
    (lambda: ops.gather_points(torch.zeros(1, 5, 2), torch.zeros(2, 3, dtype=torch.int64)), "idx"),
    (lambda: ops.gather_points(torch.zeros(5, 2), torch.zeros(1, 3, dtype=torch.int64)), "points"),
    (lambda: ops.random_mask(0, 4, 0.5), "batch"),
    (lambda: ops.random_mask(2, 0, 0.5), "num_groups"),
    (lambda: ops.random_mask(2, 4, 1.5), "ratio"),
    (lambda: ops.random_mask(2, 4, 0.5, generator=torch.Generator(), device="meta"), "generator"),
]


@pytest.mark.parametrize("call,name", BAD_CALLS)
def test_bad_inputs_raise_value_error_naming_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


def test_half_precision_uses_torch_path():
    points = _cloud(2, 200, seed=23)
    idx = ops.farthest_point_sample(points.to(torch.bfloat16), 20)
    assert torch.equal(idx, ops.farthest_point_sample_naive(points.to(torch.bfloat16), 20))
    with pytest.raises(ValueError, match="backend"):
        ops.knn(points.half(), points.half(), 3, backend="numba")


def test_backend_env_var(monkeypatch):
    points = _cloud(1, 50, seed=20)
    monkeypatch.setenv("ACT3D_OPS_BACKEND", "torch")
    assert torch.equal(ops.farthest_point_sample(points, 5), ops.farthest_point_sample_naive(points, 5))
    monkeypatch.setenv("ACT3D_OPS_BACKEND", "fast")
    with pytest.raises(ValueError, match="ACT3D_OPS_BACKEND"):
        ops.farthest_point_sample(points, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_accelerator_torch_path_matches_cpu():
    device = "cuda"
    points = _cloud(2, 2000, seed=21)
    idx = ops.farthest_point_sample(points.to(device), 100)
    assert idx.device.type == device
    assert torch.equal(idx.cpu(), ops.farthest_point_sample(points, 100))
    d_gpu, i_gpu = ops.knn(points[:, :64].to(device), points.to(device), 16)
    d_cpu, _ = ops.knn(points[:, :64], points, 16)
    torch.testing.assert_close(d_gpu.cpu(), d_cpu)
    cd = ops.chamfer_distance(points.to(device), points.flip(1).to(device) + 0.01)
    torch.testing.assert_close(cd.cpu(), ops.chamfer_distance(points, points.flip(1) + 0.01))
    mask = ops.random_mask(3, 64, 0.8, device=device)
    assert mask.device.type == device and (mask.sum(1) == 51).all()
