"""Safe, atomic checkpoint files.

Two kinds of file, and nothing that executes code when read:

- **weights**: ``*.safetensors`` (:func:`save_weights` / :func:`load_weights`), a flat
  ``name -> tensor`` map plus string metadata;
- **training state**: ``*.pt`` (:func:`save_state` / :func:`load_state`) holding the optimiser,
  scheduler, RNG states, counters and metrics. It is read with
  ``torch.load(weights_only=True)`` only, so it may contain tensors, ints, floats, bools,
  strings, ``None`` and lists/tuples/dicts of those; :func:`save_state` checks that before
  writing. RNG states are converted to tensors by :func:`capture_rng_state`.

Every write goes to a temporary file in the target's folder, is flushed and fsynced, then
renamed over the target (:func:`atomic_path`): a crash mid-write leaves the previous file
intact. A truncated or corrupt file raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = [
    "CheckpointError",
    "atomic_path",
    "capture_rng_state",
    "load_state",
    "load_weights",
    "read_weights_metadata",
    "restore_rng_state",
    "save_state",
    "save_weights",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely: truncated, corrupt, or unsafe."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- weights


def _standalone_tensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors that each own their whole storage (what safetensors needs)."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise ValueError(f"state_dict[{name!r}] is {type(tensor).__name__}, not a Tensor")
        t = tensor.detach().cpu()
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        whole = t.is_contiguous() and storage.nbytes() == t.numel() * t.element_size()
        if not whole or key in seen or t.data_ptr() != storage.data_ptr():
            t = t.contiguous().clone()
        elif t.numel() > 0:
            seen.add(key)
        out[name] = t
    return out


def save_weights(
    state_dict: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state_dict`` to ``path`` as safetensors, atomically.

    Shared, non-contiguous or partial-view tensors (tied weights, slices) are cloned into
    standalone tensors; GPU tensors are copied to the CPU.

    Args:
        state_dict: ``name -> tensor``.
        path: the target file (``.safetensors``).
        metadata: string key/value pairs stored in the header (e.g. epoch, config JSON).
    """
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"safetensors metadata must map str to str; bad keys: {bad}")
    tensors = _standalone_tensors(state_dict)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_weights(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file into ``{name: tensor}`` on ``device``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as err:  # noqa: BLE001 - any failure to parse means a damaged file
        raise CheckpointError(f"corrupt or truncated weights file {path}: {err}") from err


def read_weights_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (without reading the tensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"corrupt or truncated weights file {path}: {err}") from err


# ----------------------------------------------------------------------------- state

_SAFE_SCALARS = (bool, int, float, str, type(None), torch.dtype, torch.device)


def _check_safe(obj: Any, where: str) -> None:
    if isinstance(obj, Tensor) or isinstance(obj, _SAFE_SCALARS):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_safe(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f"training state key {where}[{key!r}] must be str or int")
            _check_safe(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"training state entry {where} is a {type(obj).__name__}; only tensors, numbers, "
        "strings, None and lists/tuples/dicts of those load with weights_only=True"
    )


def save_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a training-state dict to ``path`` with ``torch.save``, atomically.

    Raises:
        ValueError: an entry that ``torch.load(weights_only=True)`` would refuse (e.g. a
            numpy array), named by its path inside ``state``.
    """
    state = dict(state)
    _check_safe(state, "state")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_state(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training-state file with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is truncated, corrupt, or holds objects that are not plain
            data (a pickle that would run code is refused, never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain data "
            f"(weights_only=True): {err}"
        ) from err
    except Exception as err:  # noqa: BLE001 - garbage bytes surface as many exception types
        # A damaged pickle stream can fail inside torch's unpickler with IndexError, KeyError,
        # struct.error, ... ; every one of them means the same thing to the caller.
        raise CheckpointError(
            f"corrupt or truncated training state file {path}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"training state file {path} holds a {type(state).__name__}, not a dict")
    return state


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global RNG, torch CPU and every CUDA device.

    Returns:
        A dict of tensors and ints that :func:`save_state` accepts and
        :func:`restore_rng_state` restores.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    if kind != "MT19937":
        raise ValueError(f"unsupported NumPy RNG kind {kind!r}")
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned (CUDA states when both sides have GPUs)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            nps["keys"].numpy().astype(np.uint32),
            int(nps["pos"]),
            int(nps["has_gauss"]),
            float(nps["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state.get("cuda", []))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda])
