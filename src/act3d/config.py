"""Typed configs: nested dataclasses are the schema, YAML presets and ``--set`` override them.

A config is a tree of dataclasses whose fields all have defaults. Values come, in order,
from the defaults, an optional YAML preset (a packaged ``configs/<stage>/<name>.yaml`` or a
file path) and ``--set a.b=value`` overrides. Everything is checked against the type hints:
an unknown key or a value of the wrong type is a :class:`ValueError` that names the full
dotted key and where it came from, and suggests the closest valid key::

    from act3d.config import load_config
    cfg = load_config(FinetuneConfig, "tiny", ["optim.lr=1e-3"], stage="finetune")
    # ValueError: unknown key 'optim.lrr' in --set optim.lrr=1; did you mean 'optim.lr'?

Supported field types: ``int``, ``float`` (an int is accepted), ``bool``, ``str``,
``X | None``, ``Literal[...]`` (the value must be one of the choices), ``list[X]``,
``tuple[X, ...]`` / ``tuple[X, Y]``, ``dict[str, X]`` and nested dataclasses (a mapping
updates the nested default field by field). ``bool`` is never accepted for ``int``/``float``.
A float may be written ``1e-3`` (YAML 1.1 reads that as a string; it is converted here).

:class:`OptimConfig`, :class:`RuntimeConfig` and :class:`RunConfig` are the shared pieces
every stage config embeds as ``optim``, ``runtime`` and ``run``; the training engine
(:func:`act3d.train.engine.fit`) reads exactly those three.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib.resources
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

__all__ = [
    "OptimConfig",
    "RunConfig",
    "RuntimeConfig",
    "add_config_arguments",
    "config_diff",
    "config_from_args",
    "config_from_dict",
    "list_presets",
    "load_config",
    "parse_overrides",
    "preset_path",
    "save_config",
    "to_dict",
]

T = TypeVar("T")


@dataclass
class OptimConfig:
    """Optimiser, schedule and batch: AdamW, linear warm-up then cosine, stepped per iteration.

    ``batch_size`` is the *global* batch of one optimiser step: it does not change with the
    number of processes; each rank loads ``batch_size / (world_size * grad_accum)`` samples
    per forward pass.
    """

    name: Literal["adamw"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: int = 300
    warmup_epochs: int = 10
    warmup_start_lr: float = 1e-6
    min_lr: float = 1e-6
    grad_clip: float | None = None
    batch_size: int = 32
    grad_accum: int = 1
    no_decay_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"optim.epochs must be positive, got {self.epochs}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"optim.warmup_epochs must be in [0, optim.epochs={self.epochs}], "
                f"got {self.warmup_epochs}"
            )
        if self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError(
                f"optim.batch_size and optim.grad_accum must be positive, got "
                f"{self.batch_size} and {self.grad_accum}"
            )
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be positive or null, got {self.grad_clip}")


@dataclass
class RuntimeConfig:
    """Where and how the computation runs.

    ``device="auto"`` picks CUDA when available. ``precision="auto"`` is bf16 autocast on a
    GPU that supports it (else fp16 with a GradScaler) and fp32 on CPU. ``compile`` wraps
    the model in ``torch.compile``. ``threads`` sets ``torch.set_num_threads`` for the run.
    ``deterministic`` asks PyTorch for deterministic kernels (on CPU training is already
    reproducible). ``sync_bn`` converts BatchNorm to SyncBatchNorm under torchrun.
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    num_workers: int = 0
    seed: int = 0
    threads: int | None = None
    deterministic: bool = False
    sync_bn: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"runtime.num_workers must be >= 0, got {self.num_workers}")
        if self.seed < 0:
            raise ValueError(f"runtime.seed must be >= 0, got {self.seed}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"runtime.threads must be positive or null, got {self.threads}")


@dataclass
class RunConfig:
    """The run folder ``<out_dir>/<stage>-<name>-<YYYYmmdd-HHMMSS>/`` and what goes in it.

    ``best_metric`` names an epoch metric as ``val/<name>`` or ``train/<name>`` (``None``:
    no best checkpoint); ``best_mode`` says whether lower or higher is better.
    ``save_every`` keeps a periodic checkpoint every N epochs (0: none), of which the newest
    ``keep_last`` stay (0: all). ``val_every`` validates every N epochs and always after the
    last one. ``log_every`` writes a ``train_step`` record every N optimiser steps.
    ``progress="auto"`` draws a bar on a terminal and one line per epoch otherwise.
    """

    out_dir: str = "runs"
    name: str = "run"
    best_metric: str | None = "val/loss"
    best_mode: Literal["min", "max"] = "min"
    save_every: int = 0
    keep_last: int = 3
    val_every: int = 1
    log_every: int = 10
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    tensorboard: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        for key in ("save_every", "keep_last"):
            if getattr(self, key) < 0:
                raise ValueError(f"run.{key} must be >= 0, got {getattr(self, key)}")
        for key in ("val_every", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"run.{key} must be positive, got {getattr(self, key)}")
        if not self.name or "/" in self.name or os.sep in self.name:
            raise ValueError(f"run.name must be a non-empty name without '/', got {self.name!r}")
        if self.best_metric is not None and not self.best_metric.startswith(("val/", "train/")):
            raise ValueError(
                f"run.best_metric must start with 'val/' or 'train/', got {self.best_metric!r}"
            )


# ----------------------------------------------------------------------------- presets


def _preset_root() -> Path:
    return Path(str(importlib.resources.files("act3d") / "configs"))


def list_presets(stage: str) -> list[str]:
    """Names of the packaged presets of ``stage`` (``configs/<stage>/*.yaml``), sorted."""
    folder = _preset_root() / stage
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def preset_path(preset: str | os.PathLike[str], stage: str | None = None) -> Path:
    """Resolve a preset: an existing file path, ``"<stage>/<name>"``, or ``name`` with ``stage``.

    Raises:
        FileNotFoundError: a ``*.yaml``/``*.yml`` preset that does not exist.
        ValueError: an unknown packaged preset; the message lists the available ones.
    """
    text = os.fspath(preset)
    path = Path(text)
    if path.is_file():
        return path
    if text.endswith((".yaml", ".yml")):
        raise FileNotFoundError(f"config file not found: {text}")
    parts = text.split("/")
    if len(parts) == 2:
        stage, name = parts
    elif len(parts) == 1 and stage is not None:
        name = parts[0]
    else:
        raise ValueError(
            f"preset {text!r}: give a YAML file path, '<stage>/<name>' or a name with a stage"
        )
    candidate = _preset_root() / stage / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    available = list_presets(stage)
    hint = difflib.get_close_matches(name, available, n=1)
    msg = f"unknown preset {name!r} for stage {stage!r}; available: {', '.join(available) or 'none'}"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    raise ValueError(msg)


# ----------------------------------------------------------------------------- loading


def load_config(
    schema: type[T],
    preset: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    stage: str | None = None,
) -> T:
    """Build a config: schema defaults, then ``preset`` (YAML), then ``overrides``.

    Args:
        schema: a dataclass type whose fields all have defaults.
        preset: a YAML file path, ``"<stage>/<name>"``, a packaged preset name (with
            ``stage``), or ``None`` for the defaults.
        overrides: ``"a.b=value"`` strings; each value is parsed as a YAML scalar or flow
            list/mapping, then type-checked like the preset.
        stage: the stage whose packaged presets a bare ``preset`` name refers to.

    Returns:
        An instance of ``schema``.

    Raises:
        ValueError: unknown key, wrong type, bad choice, malformed override or bad YAML,
            naming the dotted key and its source.
    """
    cfg = _instantiate(schema)
    if preset is not None:
        path = preset_path(preset, stage)
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ValueError(f"invalid YAML in {source}: {err}") from err
        if data is not None:
            cfg = _apply(cfg, data, "", source)
    # Every override is checked on its own first (unknown key, wrong type: the error names
    # that override), then all are applied together, so checks across fields (e.g. warmup
    # <= epochs) see the final values whatever order the overrides came in.
    merged: dict[str, Any] = {}
    for text in overrides:
        key, value = _parse_override(text)
        nested = _nest(key, value)
        try:
            _apply(cfg, nested, "", f"--set {text}")
        except _CrossFieldError:
            pass  # may hold once the other overrides are in; checked below with all of them
        _merge(merged, nested)
    if merged:
        where = f"--set {overrides[0]}" if len(overrides) == 1 else "--set " + " --set ".join(overrides)
        cfg = _apply(cfg, merged, "", where)
    return cfg


class _CrossFieldError(ValueError):
    """A config section's own consistency check failed (raised by its ``__post_init__``)."""


def _merge(into: dict[str, Any], data: Mapping[str, Any]) -> None:
    """Deep-merge nested override ``data`` into ``into``; later values win."""
    for key, value in data.items():
        if isinstance(value, _RawValue) and isinstance(value.value, Mapping):
            value = value.value
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            _merge(old, value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value)
        else:
            into[key] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}`` (values parsed as YAML)."""
    return {key: value.value for key, value in map(_parse_override, overrides)}


def config_from_dict(schema: type[T], data: Mapping[str, Any], source: str = "dict") -> T:
    """Build ``schema`` from a (possibly partial) nested mapping, with the same checks."""
    return _apply(_instantiate(schema), data, "", source)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain nested dicts/lists/scalars (tuples become lists), YAML-ready."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ValueError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML (atomically) to ``path`` and return the path."""
    from act3d.checkpoint import atomic_path

    path = Path(path)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested dicts: ``{key: (old, new)}``.

    A key missing on one side shows as ``None`` there.
    """
    out: dict[str, tuple[Any, Any]] = {}

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in list(a) + [k for k in b if k not in a]:
                walk(a.get(k), b.get(k), f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
        elif _normalise(a) != _normalise(b):
            out[prefix] = (a, b)

    walk(old, new, "")
    return out


# ----------------------------------------------------------------------------- CLI helpers


def add_config_arguments(parser: argparse.ArgumentParser, stage: str | None = None) -> None:
    """Add ``--preset NAME|FILE``, ``--set KEY=VALUE`` (repeatable) and ``--resume RUN_DIR``;
    ``stage`` names the packaged presets in the help."""
    names = ", ".join(list_presets(stage)) if stage is not None else ""
    parser.add_argument(
        "--preset", default=None, help=f"packaged preset name ({names or 'see configs/'}) or a YAML file"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set optim.lr=1e-3 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with its saved config",
    )


def config_from_args(schema: type[T], args: argparse.Namespace, stage: str) -> T:
    """The config named by :func:`add_config_arguments`' options.

    With ``--resume RUN_DIR`` the config is ``RUN_DIR/config.yaml`` (``--set`` still applies,
    for the settings a resume may change); ``--preset`` is then an error.
    """
    resume = getattr(args, "resume", None)
    if resume is not None:
        if args.preset is not None:
            raise ValueError("--resume uses the run's saved config.yaml; drop --preset")
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"no config.yaml in run folder {resume}")
        return load_config(schema, saved, args.overrides)
    return load_config(schema, args.preset, args.overrides, stage=stage)


# ----------------------------------------------------------------------------- internals


def _instantiate(schema: type[T]) -> T:
    if not dataclasses.is_dataclass(schema) or not isinstance(schema, type):
        raise ValueError(f"config schema must be a dataclass type, got {schema!r}")
    try:
        return schema()
    except TypeError as err:
        raise ValueError(f"every field of {schema.__name__} needs a default: {err}") from err


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"malformed override {text!r}; expected KEY=VALUE, e.g. optim.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, _RawValue(value, raw)


class _RawValue:
    """An override value with the text it was parsed from (so str fields keep ``007``)."""

    __slots__ = ("value", "raw")

    def __init__(self, value: Any, raw: str) -> None:
        self.value = value
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RawValue) and self.value == other.value

    def __repr__(self) -> str:
        return repr(self.value)


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dotted_keys(cls: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(_dotted_keys(tp, name + "."))
    return keys


def _apply(cfg: Any, data: Any, prefix: str, source: str, root: Any = None) -> Any:
    """Return a copy of dataclass ``cfg`` updated from mapping ``data``."""
    root = cfg if root is None else root
    where = f"'{prefix[:-1]}'" if prefix else "the top level"
    if isinstance(data, _RawValue):
        data = data.value
    if not isinstance(data, Mapping):
        raise ValueError(
            f"wrong type for {where} in {source}: expected a mapping, got "
            f"{type(data).__name__} {data!r}"
        )
    cls = type(cfg)
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    updates: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if not isinstance(key, str) or key not in names:
            raise ValueError(_unknown_key_message(str(full), source, root, prefix, sorted(names)))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            updates[key] = _apply(getattr(cfg, key), value, full + ".", source, root)
        else:
            updates[key] = _coerce(value, tp, full, source)
    try:
        return dataclasses.replace(cfg, **updates)
    except _CrossFieldError:
        raise
    except ValueError as err:
        raise _CrossFieldError(f"{err} (in {source})") from err


def _unknown_key_message(full: str, source: str, root: Any, prefix: str, valid: list[str]) -> str:
    """Suggest a sibling spelled alike, else the same name in another section, else list."""
    msg = f"unknown key '{full}' in {source}"
    leaf = full[len(prefix) :]
    match = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
    if match:
        return msg + f"; did you mean '{prefix}{match[0]}'?"
    elsewhere = [k for k in _dotted_keys(type(root)) if k.rsplit(".", 1)[-1] == leaf]
    if elsewhere:
        return msg + f"; did you mean '{elsewhere[0]}'?"
    section = f"under '{prefix[:-1]}'" if prefix else "at the top level"
    return msg + f"; valid keys {section}: {', '.join(valid)}"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    raw: str | None = None
    if isinstance(value, _RawValue):
        value, raw = value.value, value.raw
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ValueError:
        return ValueError(
            f"wrong type for '{key}' in {source}: expected {expected}, got "
            f"{type(value).__name__} {value!r}"
        )

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) not in args or len(args) != 2:
            raise TypeError(f"unsupported config annotation {tp} for '{key}'")
        if value is None:
            return None
        inner = args[0] if args[1] is type(None) else args[1]
        return _coerce(value if raw is None else _RawValue(value, raw), inner, key, source)
    if origin is Literal:
        if raw is not None and value not in args and raw.strip() in args:
            value = raw.strip()
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        choices = ", ".join(repr(c) for c in args)
        hint = difflib.get_close_matches(str(value), [str(c) for c in args], n=1)
        msg = f"invalid value {value!r} for '{key}' in {source}; choose one of {choices}"
        raise ValueError(msg + (f"; did you mean {hint[0]!r}?" if hint else ""))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("bool (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise fail("float")
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None and value is not None and not isinstance(value, (list, dict)):
            return raw.strip()
        raise fail("str")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail(_type_name(tp))
        (inner,) = args
        return [_coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail(_type_name(tp))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"{_type_name(tp)} of length {len(args)}")
        return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail(_type_name(tp))
        kt, vt = args
        return {
            _coerce(k, kt, f"{key}.<key>", source): _coerce(v, vt, f"{key}.{k}", source)
            for k, v in value.items()
        }
    raise TypeError(f"unsupported config annotation {tp} for '{key}'")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value
