"""Checkpoint files: round trips, atomic writes, corrupt/truncated/malicious files refused."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from act3d import checkpoint as ckpt
from act3d.checkpoint import (
    CheckpointError,
    atomic_path,
    capture_rng_state,
    load_state,
    load_weights,
    read_weights_metadata,
    restore_rng_state,
    save_state,
    save_weights,
)


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    return {
        "a": base,
        "tied": base,  # the same tensor twice (tied weights)
        "t": base.t(),  # non-contiguous view of the same storage
        "row": base[1],  # partial view at an offset
        "b": torch.arange(5, dtype=torch.int64),
        "h": torch.randn(3, dtype=torch.float16),
    }


def test_weights_round_trip_with_shared_and_views(tmp_path: Path) -> None:
    w = _weights()
    path = save_weights(w, tmp_path / "m.safetensors", {"epoch": "3", "stage": "toy"})
    out = load_weights(path)
    assert set(out) == set(w)
    for name, tensor in w.items():
        assert out[name].dtype == tensor.dtype and torch.equal(out[name], tensor), name
    assert read_weights_metadata(path) == {"epoch": "3", "stage": "toy"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_weights_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata must map str to str"):
        save_weights({"a": torch.zeros(1)}, tmp_path / "x.safetensors", {"epoch": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"state_dict\['a'\] is list"):
        save_weights({"a": [1.0]}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 7, 100, -20])
def test_truncated_weights_name_the_file(tmp_path: Path, keep: int) -> None:
    path = save_weights({"a": torch.randn(64, 64)}, tmp_path / "w.safetensors")
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_weights(bad)
    if 0 <= keep < 100:  # the header itself is cut: even reading the metadata fails
        with pytest.raises(CheckpointError, match="bad.safetensors"):
            read_weights_metadata(bad)


def _garbage(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def test_garbage_weights(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.safetensors"
    for seed in range(50):
        bad.write_bytes(_garbage(seed, 300))
        with pytest.raises(CheckpointError, match="garbage.safetensors"):
            load_weights(bad)
    assert issubclass(CheckpointError, ValueError)


def test_state_round_trip_with_rng(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in NumPy's state
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"epoch": 2, "optimizer": opt.state_dict(), "rng": [capture_rng_state()], "best": None, "names": ("a", 1)}
    expected = (random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    path = save_state(state, tmp_path / "last.pt")
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    loaded = load_state(path)
    restore_rng_state(loaded["rng"][0])
    got = (random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
    assert loaded["epoch"] == 2 and loaded["best"] is None
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_save_state_refuses_what_weights_only_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"state\['rng'\]\['np'\] is a ndarray"):
        save_state({"rng": {"np": np.zeros(3)}}, tmp_path / "s.pt")
    with pytest.raises(ValueError, match="key"):
        save_state({"x": {(1, 2): 3}}, tmp_path / "s.pt")
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("keep", [0, 10, 200, -50])
def test_truncated_state_names_the_file(tmp_path: Path, keep: int) -> None:
    path = save_state({"w": torch.randn(100), "epoch": 1}, tmp_path / "last.pt")
    data = path.read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_state(bad)


def test_garbage_and_non_dict_state(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pt"
    # Random bytes, and pickle protocol-2 headers followed by random opcodes: a damaged
    # stream fails inside torch's unpickler in many ways (IndexError, KeyError, EOFError, ...).
    # Every one must surface as a CheckpointError naming the file.
    blobs = [_garbage(seed, 500) for seed in range(100)]
    blobs += [b"\x80\x02" + _garbage(seed, 64) for seed in range(100)]
    blobs += [b"\x80\x02\x81", b"\x80\x02", b""]
    for blob in blobs:
        bad.write_bytes(blob)
        with pytest.raises(CheckpointError, match="garbage.pt"):
            load_state(bad)
    lst = tmp_path / "list.pt"
    torch.save([1, 2], lst)
    with pytest.raises(CheckpointError, match="list.pt holds a list"):
        load_state(lst)
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "missing.pt")


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"epoch": 1, "x": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    assert not marker.exists()
    # The payload is real: a plain unpickler would create the file.
    if writer == "pickle":
        with open(path, "rb") as fh:
            pickle.load(fh).get("x").close()
        assert marker.exists()
        marker.unlink()
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt"):
        load_state(path)
    assert not marker.exists()


def test_atomic_write_keeps_previous_file_on_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = save_state({"epoch": 1, "w": torch.ones(10)}, tmp_path / "last.pt")
    weights = save_weights({"w": torch.ones(10)}, tmp_path / "last.safetensors")

    def half_then_die(obj, f, *args, **kwargs):  # noqa: ANN001, ANN202
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed mid-write")

    def half_weights_then_die(tensors, filename, metadata=None):  # noqa: ANN001, ANN202
        Path(filename).write_bytes(b"\x10\x00")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_state({"epoch": 2, "w": torch.zeros(10)}, target)
    monkeypatch.setattr(ckpt, "save_file", half_weights_then_die)
    with pytest.raises(OSError, match="disk full"):
        save_weights({"w": torch.zeros(10)}, weights)
    monkeypatch.undo()
    assert load_state(target)["epoch"] == 1
    assert torch.equal(load_weights(weights)["w"], torch.ones(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.safetensors"]


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("two")
            raise RuntimeError("boom")
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
