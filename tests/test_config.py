"""Typed configs: presets, overrides, strict errors with suggestions, round trips."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from act3d import config as config_mod
from act3d.config import (
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    add_config_arguments,
    config_diff,
    config_from_args,
    config_from_dict,
    list_presets,
    load_config,
    parse_overrides,
    preset_path,
    save_config,
    to_dict,
)


@dataclass
class ModelSection:
    depth: int = 4
    width: float = 1.5
    act: Literal["gelu", "relu"] = "gelu"
    dropout: float | None = None
    name: str = "net"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    scale: tuple[float, float] = (0.5, 2.0)
    sizes: tuple[int, ...] = (3,)
    extra: dict[str, float] = field(default_factory=dict)
    frozen: bool = False


@dataclass
class Schema:
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, epochs=5, warmup_epochs=1))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tag: str = "x"


def _write(tmp_path: Path, text: str, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_nested_default_factories() -> None:
    cfg = load_config(Schema)
    assert cfg.optim.lr == 1e-3 and cfg.optim.epochs == 5 and cfg.optim.weight_decay == 0.05
    assert cfg.model.layers == [1, 2] and cfg.runtime.device == "auto"


@pytest.mark.parametrize("order", [1, -1])
def test_overrides_checked_together_whatever_their_order(order: int) -> None:
    # defaults: epochs 5, warmup 1. epochs=8 with warmup=6 is consistent, but warmup=6 alone
    # (before epochs=8) is not: the cross-field check must see both.
    sets = ["optim.warmup_epochs=6", "optim.epochs=8", "model.depth=2"][::order]
    cfg = load_config(Schema, overrides=sets)
    assert (cfg.optim.warmup_epochs, cfg.optim.epochs, cfg.model.depth) == (6, 8, 2)
    assert load_config(Schema, overrides=["optim.epochs=8", "optim.epochs=3"]).optim.epochs == 3  # last wins
    with pytest.raises(ValueError, match=r"optim\.warmup_epochs must be in \[0, optim\.epochs=3\].*"
                                         r"--set optim\.warmup_epochs=4 --set optim\.epochs=3"):
        load_config(Schema, overrides=["optim.warmup_epochs=4", "optim.epochs=3"])
    # key and type errors still name the one override at fault, wherever it is
    with pytest.raises(ValueError, match=r"unknown key 'optim\.epoch' in --set optim\.epoch=3\b"):
        load_config(Schema, overrides=["optim.warmup_epochs=6", "optim.epoch=3"])
    with pytest.raises(ValueError, match=r"optim\.epochs.*--set optim\.epochs=many"):
        load_config(Schema, overrides=["optim.warmup_epochs=6", "optim.epochs=many"])


def test_preset_file_then_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "model:\n  depth: 2\n  act: relu\n  layers: [4, 5, 6]\n  scale: [1, 3]\n"
        "optim:\n  lr: 1e-4\n  betas: [0.9, 0.95]\nrun:\n  name: demo\n",
    )
    cfg = load_config(Schema, path, ["model.depth=7", "optim.weight_decay=0", "tag=007", "model.dropout=0.1"])
    assert cfg.model.depth == 7  # override beats the preset
    assert cfg.model.act == "relu" and cfg.model.layers == [4, 5, 6]
    assert cfg.model.scale == (1.0, 3.0) and isinstance(cfg.model.scale[0], float)
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)  # "1e-4" is a YAML str
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.optim.weight_decay == 0.0 and isinstance(cfg.optim.weight_decay, float)  # int -> float
    assert cfg.optim.epochs == 5  # untouched nested default survives
    assert cfg.tag == "007"  # a str field keeps the text as typed
    assert cfg.model.dropout == 0.1
    assert cfg.run.name == "demo"


def test_override_value_parsing() -> None:
    cfg = load_config(
        Schema,
        None,
        [
            "model.layers=[7, 8]",
            "model.sizes=[1, 2, 3]",
            "model.frozen=true",
            "model.dropout=null",
            "model.extra={a: 1, b: 2.5}",
            "runtime.threads=2",
            "run.best_metric=val/acc",
            "model.name=a=b",
        ],
    )
    assert cfg.model.layers == [7, 8] and cfg.model.sizes == (1, 2, 3)
    assert cfg.model.frozen is True and cfg.model.dropout is None
    assert cfg.model.extra == {"a": 1.0, "b": 2.5}
    assert cfg.runtime.threads == 2 and cfg.run.best_metric == "val/acc"
    assert cfg.model.name == "a=b"
    assert parse_overrides(["a.b=1", "c=[1, 2]"]) == {"a.b": 1, "c": [1, 2]}


def test_unknown_key_in_preset_names_key_file_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ValueError) as err:
        load_config(Schema, path)
    msg = str(err.value)
    assert "'optim.lrr'" in msg and "tiny.yaml" in msg and "did you mean 'optim.lr'?" in msg


def test_unknown_key_in_override_and_section_typo() -> None:
    with pytest.raises(ValueError, match=r"unknown key 'optim\.lrr' in --set optim\.lrr=1; did you mean 'optim\.lr'\?"):
        load_config(Schema, None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match=r"unknown key 'optm' .*did you mean 'optim'"):
        load_config(Schema, None, ["optm.lr=1"])
    with pytest.raises(ValueError, match=r"unknown key 'model\.zzzzzz'.*valid keys under 'model': act, depth"):
        load_config(Schema, None, ["model.zzzzzz=1"])
    with pytest.raises(ValueError, match=r"unknown key 'model\.lr' .*did you mean 'optim\.lr'"):
        load_config(Schema, None, ["model.lr=1"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("optim.lr=fast", r"wrong type for 'optim\.lr' in --set optim\.lr=fast: expected float, got str"),
        ("model.depth=true", r"wrong type for 'model\.depth'.*expected int, got bool"),
        ("model.depth=2.5", r"wrong type for 'model\.depth'.*expected int, got float"),
        ("optim.lr=true", r"wrong type for 'optim\.lr'.*expected float, got bool"),
        ("model.frozen=1", r"wrong type for 'model\.frozen'.*expected bool"),
        ("model.layers=3", r"wrong type for 'model\.layers'.*expected list\[int\]"),
        ("model.layers=[1, x]", r"wrong type for 'model\.layers\[1\]'.*expected int"),
        ("model.scale=[1, 2, 3]", r"wrong type for 'model\.scale'.*of length 2"),
        ("model=3", r"wrong type for 'model' in --set model=3: expected a mapping"),
    ],
)
def test_wrong_types(override: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_config(Schema, None, [override])


def test_bad_literal_choice_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_config(Schema, None, ["runtime.device=gpu"])
    msg = str(err.value)
    assert "'runtime.device'" in msg and "'auto', 'cpu', 'cuda'" in msg
    path = _write(tmp_path, "runtime:\n  precision: bf61\n", "p.yaml")
    with pytest.raises(ValueError, match=r"'runtime\.precision' in .*p\.yaml.*did you mean 'bf16'"):
        load_config(Schema, path)


def test_wrong_type_in_preset_names_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  depth: deep\n", "bad.yaml")
    with pytest.raises(ValueError, match=r"'model\.depth' in .*bad\.yaml"):
        load_config(Schema, path)
    path = _write(tmp_path, "model: [1, 2\n", "broken.yaml")
    with pytest.raises(ValueError, match=r"invalid YAML in .*broken\.yaml"):
        load_config(Schema, path)


def test_post_init_validation_surfaces_source() -> None:
    with pytest.raises(ValueError, match=r"warmup_epochs.*in --set optim\.warmup_epochs=9"):
        load_config(Schema, None, ["optim.warmup_epochs=9"])
    with pytest.raises(ValueError, match="best_metric must start with"):
        load_config(Schema, None, ["run.best_metric=acc"])


def test_malformed_overrides() -> None:
    for bad in ("optim.lr", "=3", "optim..lr=1", ".lr=1"):
        with pytest.raises(ValueError, match="malformed override"):
            load_config(Schema, None, [bad])


def test_round_trip_to_dict_save_and_from_dict(tmp_path: Path) -> None:
    cfg = load_config(Schema, None, ["model.scale=[0.25, 4]", "optim.grad_clip=10", "model.extra={k: 1}"])
    data = to_dict(cfg)
    assert data["model"]["scale"] == [0.25, 4.0]  # tuples become lists
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == data
    assert load_config(Schema, path) == cfg
    assert config_from_dict(Schema, data) == cfg
    assert config_from_dict(Schema, {"model": {"depth": 1}}).model.depth == 1
    with pytest.raises(ValueError, match=r"unknown key 'model\.deph' in mine; did you mean 'model\.depth'"):
        config_from_dict(Schema, {"model": {"deph": 1}}, source="mine")


def test_config_diff() -> None:
    a = to_dict(Schema())
    b = to_dict(load_config(Schema, None, ["optim.lr=0.5", "runtime.threads=3"]))
    assert config_diff(a, b) == {"optim.lr": (1e-3, 0.5), "runtime.threads": (None, 3)}
    assert config_diff(a, a) == {}
    assert config_diff({"x": (1, 2)}, {"x": [1, 2]}) == {}


def test_packaged_presets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "configs"
    (root / "finetune").mkdir(parents=True)
    (root / "finetune" / "tiny.yaml").write_text("model:\n  depth: 1\n")
    (root / "finetune" / "paper.yaml").write_text("model:\n  depth: 12\n  bogus: 1\n")
    monkeypatch.setattr(config_mod, "_preset_root", lambda: root)
    assert list_presets("finetune") == ["paper", "tiny"]
    assert list_presets("nothing") == []
    assert load_config(Schema, "tiny", stage="finetune").model.depth == 1
    assert load_config(Schema, "finetune/tiny").model.depth == 1
    assert preset_path("tiny", "finetune") == root / "finetune" / "tiny.yaml"
    with pytest.raises(ValueError, match=r"unknown preset 'tinyy' for stage 'finetune'; available: paper, tiny; did you mean 'tiny'"):
        load_config(Schema, "tinyy", stage="finetune")
    with pytest.raises(ValueError, match=r"unknown key 'model\.bogus' in .*finetune/paper\.yaml"):
        load_config(Schema, "paper", stage="finetune")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(Schema, tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="give a YAML file path"):
        load_config(Schema, "tiny")


def test_real_package_preset_root_is_inside_the_package() -> None:
    import act3d

    assert config_mod._preset_root() == Path(act3d.__file__).parent / "configs"


def test_cli_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--set", "model.depth=3", "--set", "optim.lr=0.1"])
    cfg = config_from_args(Schema, args, stage="finetune")
    assert cfg.model.depth == 3 and cfg.optim.lr == 0.1
    run_dir = tmp_path / "run"
    save_config(load_config(Schema, None, ["model.depth=9"]), run_dir / "config.yaml")
    args = parser.parse_args(["--resume", str(run_dir), "--set", "runtime.num_workers=2"])
    cfg = config_from_args(Schema, args, stage="finetune")
    assert cfg.model.depth == 9 and cfg.runtime.num_workers == 2
    args = parser.parse_args(["--resume", str(run_dir), "--preset", "tiny"])
    with pytest.raises(ValueError, match="drop --preset"):
        config_from_args(Schema, args, stage="finetune")


def test_schema_errors() -> None:
    @dataclass
    class NoDefault:
        x: int

    with pytest.raises(ValueError, match="needs a default"):
        load_config(NoDefault)
    with pytest.raises(ValueError, match="must be a dataclass type"):
        load_config(dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="to_dict expects a dataclass instance"):
        to_dict(Schema)
