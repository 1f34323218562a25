"""Reference checkpoint import/export (``act3d convert``, ACT_SPEC §5).

The reference layouts are written out *here*, key by key with their shapes, from ACT_SPEC §5
(not produced by the code under test), so the import is checked against an independent
description; the classifier is also checked as a round trip act3d -> reference -> act3d.
Sizes are tiny except one paper-size student (21.8M parameters) built in memory.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from act3d.checkpoint import CheckpointError
from act3d.cli import main
from act3d.convert import (
    convert_file,
    convert_reference,
    export_reference,
    load_mpm,
    load_reference_checkpoint,
    to_reference,
)
from act3d.models.classifier import PointClassifier
from act3d.models.encoder_api import load_encoder
from act3d.models.mpm import MaskedPointModel, MPMConfig
from act3d.models.student import EncoderConfig, PointEncoder
from act3d.train.finetune import load_classifier, load_init_backbone

DIM, DEPTH = 32, 2
OVERRIDES = {"num_groups": 8, "group_size": 8, "num_heads": 2}
SMALL = EncoderConfig(embed_dim=DIM, depth=DEPTH, **OVERRIDES)
SMALL_JSON = json.dumps(OVERRIDES)


# ----------------------------------------------------------------------------- §5 layouts


def _bn(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{name}.weight": (channels,),
        f"{name}.bias": (channels,),
        f"{name}.running_mean": (channels,),
        f"{name}.running_var": (channels,),
        f"{name}.num_batches_tracked": (),
    }


def _block(name: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{name}.norm1.weight": (dim,),
        f"{name}.norm1.bias": (dim,),
        f"{name}.attn.qkv.weight": (3 * dim, dim),
        f"{name}.attn.proj.weight": (dim, dim),
        f"{name}.attn.proj.bias": (dim,),
        f"{name}.norm2.weight": (dim,),
        f"{name}.norm2.bias": (dim,),
        f"{name}.mlp.fc1.weight": (4 * dim, dim),
        f"{name}.mlp.fc1.bias": (4 * dim,),
        f"{name}.mlp.fc2.weight": (dim, 4 * dim),
        f"{name}.mlp.fc2.bias": (dim,),
    }


def reference_backbone(dim: int, depth: int, prefix: str, cls: bool = True) -> dict[str, tuple[int, ...]]:
    """The student backbone keys of ACT_SPEC §5 (mini-PointNet, pos MLP, blocks, norm)."""
    shapes: dict[str, tuple[int, ...]] = {}
    if cls:
        shapes.update({"cls_token": (1, 1, dim), "cls_pos": (1, 1, dim)})
    shapes.update({"encoder.first_conv.0.weight": (128, 3, 1), "encoder.first_conv.0.bias": (128,)})
    shapes.update(_bn("encoder.first_conv.1", 128))
    shapes.update({"encoder.first_conv.3.weight": (256, 128, 1), "encoder.first_conv.3.bias": (256,)})
    shapes.update({"encoder.second_conv.0.weight": (512, 512, 1), "encoder.second_conv.0.bias": (512,)})
    shapes.update(_bn("encoder.second_conv.1", 512))
    shapes.update({"encoder.second_conv.3.weight": (dim, 512, 1), "encoder.second_conv.3.bias": (dim,)})
    shapes.update({"pos_embed.0.weight": (128, 3), "pos_embed.0.bias": (128,)})
    shapes.update({"pos_embed.2.weight": (dim, 128), "pos_embed.2.bias": (dim,)})
    for i in range(depth):
        shapes.update(_block(f"blocks.blocks.{i}", dim))
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return {prefix + k: v for k, v in shapes.items()}


def reference_act_pretrain(dim: int, depth: int, decoder_depth: int = 2) -> dict[str, tuple[int, ...]]:
    """An ACT Stage II checkpoint: student, unused heads, decoder, teacher (§5)."""
    shapes = reference_backbone(dim, depth, "ACT_encoder.")
    shapes.update({"ACT_encoder.lm_head.weight": (64, dim), "ACT_encoder.lm_head.bias": (64,)})
    shapes.update({"ACT_encoder.cls_head.0.weight": (32, dim), "ACT_encoder.cls_head.0.bias": (32,)})
    shapes.update({"ACT_encoder.cls_head.2.weight": (32, 32), "ACT_encoder.cls_head.2.bias": (32,)})
    shapes.update(_decoder("ACT_decoder", dim, decoder_depth))
    shapes.update({"proj_head.weight": (dim, dim), "proj_head.bias": (dim,)})
    shapes.update({"dvae_tokenizer.codebook": (16, dim), "dvae_tokenizer.dgcnn_1.layer1.0.weight": (8, 6, 1, 1)})
    return shapes


def _decoder(name: str, dim: int, depth: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"mask_token": (1, 1, dim)}
    shapes.update({"decoder_pos_embed.0.weight": (128, 3), "decoder_pos_embed.0.bias": (128,)})
    shapes.update({"decoder_pos_embed.2.weight": (dim, 128), "decoder_pos_embed.2.bias": (dim,)})
    for i in range(depth):
        shapes.update(_block(f"{name}.blocks.{i}", dim))
    shapes.update({f"{name}.norm.weight": (dim,), f"{name}.norm.bias": (dim,)})
    return shapes


def reference_classifier(dim: int, depth: int, classes: int) -> dict[str, tuple[int, ...]]:
    """A fine-tuned classifier: bare backbone + cls_head_finetune.{0,1,4,5,8} (§5)."""
    shapes = reference_backbone(dim, depth, "")
    shapes.update({"cls_head_finetune.0.weight": (256, 2 * dim), "cls_head_finetune.0.bias": (256,)})
    shapes.update(_bn("cls_head_finetune.1", 256))
    shapes.update({"cls_head_finetune.4.weight": (256, 256), "cls_head_finetune.4.bias": (256,)})
    shapes.update(_bn("cls_head_finetune.5", 256))
    shapes.update({"cls_head_finetune.8.weight": (classes, 256), "cls_head_finetune.8.bias": (classes,)})
    return shapes


def make_tensors(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded values; each key gets its own offset, so any two keys differ."""
    gen = torch.Generator().manual_seed(seed)
    largest = max(math.prod(shape) for shape in shapes.values())
    pool = torch.rand(largest, generator=gen) * 0.1 - 0.05
    out = {}
    for i, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7 + i, dtype=torch.int64)
        else:
            start = (i * 7919) % (largest - math.prod(shape) + 1)
            out[key] = pool[start : start + math.prod(shape)].reshape(shape) + 1.0 + i * 1e-3
    return out


def act3d_key(reference_key: str, prefix: str) -> str:
    """The act3d name of a reference backbone key: drop the prefix, un-nest the blocks."""
    return reference_key[len(prefix):].replace("blocks.blocks.", "blocks.")


def save_pth(path: Path, state: dict[str, torch.Tensor], module: bool = False) -> Path:
    if module:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"base_model": state, "epoch": 300, "metrics": {"acc": torch.tensor(93.7)}}, path)
    return path


# ----------------------------------------------------------------------------- tests


def test_paper_size_act_checkpoint_maps_with_zero_missing_keys():
    shapes = reference_act_pretrain(384, 12)
    ref = make_tensors(shapes)
    result = convert_reference({"base_model": ref}, source="act.pth")
    assert result.kind == "student" and result.layout == "act"
    assert result.encoder_config == EncoderConfig.paper()
    assert result.missing == () and result.unexpected == ()
    backbone = [k for k in shapes if k.startswith("ACT_encoder.") and "_head." not in k]
    assert len(backbone) == 158 and len(result.state_dict) == 158
    assert set(result.ignored) == set(shapes) - set(backbone)
    for key in backbone:
        assert torch.equal(result.state_dict[act3d_key(key, "ACT_encoder.")], ref[key]), key
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    parameters = sum(v.numel() for k, v in result.state_dict.items() if not k.endswith(buffers))
    assert parameters == 21_825_792  # the paper's 21.8M
    back = to_reference(result.state_dict, "act")
    assert set(back) == set(backbone)
    assert all(torch.equal(back[k], ref[k]) for k in backbone)


@pytest.mark.parametrize("module", [False, True])
def test_act_student_file_converts_to_an_encoder_file_the_finetune_init_loads(tmp_path, capsys, module):
    ref = make_tensors(reference_act_pretrain(DIM, DEPTH), seed=1)
    src = save_pth(tmp_path / "ckpt-last.pth", ref, module=module)
    out = tmp_path / "student.safetensors"
    assert main(["convert", str(src), str(out), "--config", SMALL_JSON]) == 0
    printed = capsys.readouterr().out
    assert "reference layout 'act' -> act3d student" in printed and "dvae_tokenizer" in printed
    encoder = load_encoder(out)
    assert encoder.config == SMALL
    own = encoder.state_dict()
    for key, value in ref.items():
        if key.startswith("ACT_encoder.") and "_head." not in key:
            assert torch.equal(own[act3d_key(key, "ACT_encoder.")], value), key
    config, state, _ = load_init_backbone(str(out))
    assert config == SMALL and set(state) == set(own)


def test_classifier_round_trip_is_bit_identical_with_identical_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("ACT3D_OPS_BACKEND", "torch")  # grouping ops without JIT compilation
    torch.manual_seed(0)
    model = PointClassifier(SMALL, num_classes=5)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    ref = to_reference(model, "classifier")
    assert {k: tuple(v.shape) for k, v in ref.items()} == reference_classifier(DIM, DEPTH, 5)

    src = save_pth(tmp_path / "cls.pth", ref, module=True)
    out = tmp_path / "classifier.safetensors"
    assert main(["convert", str(src), str(out), "--config", SMALL_JSON]) == 0
    loaded = load_classifier(out)
    assert loaded.mode == "full" and loaded.num_classes == 5
    original = model.state_dict()
    assert set(loaded.state_dict()) == set(original)
    assert all(torch.equal(v, original[k]) for k, v in loaded.state_dict().items())
    points = torch.randn(3, 64, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(points), model(points))

    back = tmp_path / "back.pth"
    assert main(["convert", "--to-reference", str(out), str(back)]) == 0
    written = torch.load(back, weights_only=True)
    assert set(written) == {"base_model"} and set(written["base_model"]) == set(ref)
    assert all(torch.equal(written["base_model"][k], v) for k, v in ref.items())


@pytest.mark.parametrize("head", ["mlp3", "linear"])
def test_hand_built_classifier_converts_and_exports_back_unchanged(tmp_path, head):
    shapes = reference_classifier(DIM, DEPTH, 3)
    if head == "linear":
        shapes = {k: v for k, v in shapes.items() if not k.startswith("cls_head_finetune.")}
        shapes.update({"cls_head_finetune.0.weight": (3, 2 * DIM), "cls_head_finetune.0.bias": (3,)})
    ref = make_tensors(shapes, seed=6)
    src = save_pth(tmp_path / "cls.pth", ref)
    out = tmp_path / "classifier.safetensors"
    with pytest.raises(ValueError, match="2 class names"):
        convert_file(src, out, config=OVERRIDES, mode=head, class_names=["a", "b"])
    result = convert_file(src, out, config=OVERRIDES, mode=head, class_names=["a", "b", "c"])
    assert result.kind == "classifier" and result.missing == () and result.unexpected == ()
    loaded = load_classifier(out)
    assert loaded.mode == head and loaded.class_names == ["a", "b", "c"]
    back = to_reference(loaded, "classifier")
    assert set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)


def test_pointmae_file_maps_the_encoder_and_reports_the_missing_cls_token(tmp_path, capsys):
    shapes = reference_backbone(DIM, DEPTH, "MAE_encoder.", cls=False)
    shapes.update(_decoder("MAE_decoder", DIM, 2))
    shapes.update({"increase_dim.0.weight": (3 * 8, DIM, 1), "increase_dim.0.bias": (3 * 8,)})
    ref = make_tensors(shapes, seed=2)

    student = convert_reference(ref, config=OVERRIDES, source="mae.pth")
    assert student.layout == "pointmae" and student.missing == ("cls_token", "cls_pos")
    assert student.unexpected == ()
    for key in shapes:
        if key.startswith("MAE_encoder."):
            assert torch.equal(student.state_dict[act3d_key(key, "MAE_encoder.")], ref[key]), key
    assert any("cls_token" in note for note in student.notes)
    with pytest.raises(ValueError, match=r"mae\.pth.*cls_token"):
        convert_reference(ref, config=OVERRIDES, strict=True, source="mae.pth")
    src = save_pth(tmp_path / "pointmae.pth", ref, module=True)
    assert main(["convert", str(src), str(tmp_path / "s.safetensors"), "--strict", "--config", SMALL_JSON]) == 2
    assert "cls_token" in capsys.readouterr().err and not (tmp_path / "s.safetensors").exists()

    mpm = convert_reference(ref, "mpm", config={"num_groups": 8, "num_heads": 2})
    assert mpm.mpm_config.target == "points" and mpm.encoder_config.group_size == 8
    assert mpm.mpm_config.decoder_depth == 2
    assert torch.equal(mpm.state_dict["proj_head.weight"], ref["increase_dim.0.weight"][..., 0])
    assert torch.equal(mpm.state_dict["decoder.1.mlp.fc2.weight"], ref["MAE_decoder.blocks.1.mlp.fc2.weight"])
    again = to_reference(mpm.build_model(), "pointmae")
    assert set(again) == set(shapes) and all(torch.equal(again[k], ref[k]) for k in shapes)


def test_mpm_kind_keeps_the_act_decoder_and_round_trips_through_a_file(tmp_path):
    ref = make_tensors(reference_act_pretrain(DIM, DEPTH), seed=3)
    src = save_pth(tmp_path / "act.pth", ref)
    out = tmp_path / "mpm.safetensors"
    result = convert_file(src, out, "mpm", config=OVERRIDES)
    assert result.missing == () and result.unexpected == ()
    model = load_mpm(out)
    assert isinstance(model, MaskedPointModel) and model.config.target == "latent"
    assert torch.equal(model.state_dict()["decoder_norm.weight"], ref["ACT_decoder.norm.weight"])
    back = tmp_path / "back.pth"
    written = export_reference(out, back, "act")
    kept = {k for k in ref if not k.startswith(("dvae_tokenizer.", "ACT_encoder.lm_head", "ACT_encoder.cls_head"))}
    assert set(written) == kept and all(torch.equal(written[k], ref[k]) for k in kept)
    assert torch.equal(torch.load(back, weights_only=True)["base_model"]["mask_token"], ref["mask_token"])


def test_a_dict_with_no_backbone_key_fails_loudly_naming_the_file_and_prefixes(tmp_path, capsys):
    src = save_pth(tmp_path / "random.pth", {"fc.weight": torch.zeros(2, 2), "layer1.bias": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"random\.pth.*'ACT_encoder\.', 'MAE_encoder\.'"):
        convert_file(src, tmp_path / "out.safetensors")
    assert main(["convert", str(src), str(tmp_path / "out.safetensors")]) == 2
    assert "random.pth" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_shape_mismatch_config_conflict_and_incomplete_backbone_are_errors():
    ref = make_tensors(reference_act_pretrain(DIM, DEPTH), seed=4)
    bad = dict(ref, **{"ACT_encoder.blocks.blocks.1.mlp.fc2.bias": torch.zeros(64)})
    with pytest.raises(ValueError, match=r"ACT_encoder\.blocks\.blocks\.1\.mlp\.fc2\.bias.*\(64,\)"):
        convert_reference(bad, config=OVERRIDES, source="bad.pth")
    with pytest.raises(ValueError, match=f"embed_dim=384 but the weights have embed_dim={DIM}"):
        convert_reference(ref, config="paper")
    with pytest.raises(ValueError, match="pass heads"):  # 32-d: no default number of heads
        convert_reference(ref)
    incomplete = {k: v for k, v in ref.items() if "blocks.blocks.1.attn" not in k}
    with pytest.raises(ValueError, match=r"lacks act3d keys .*blocks\.1\.attn"):
        convert_reference(incomplete, config=OVERRIDES)
    assert convert_reference(ref, config=OVERRIDES, heads=8).encoder_config.num_heads == 8
    with pytest.raises(ValueError, match="cls_head_finetune"):
        convert_reference(ref, "classifier", config=OVERRIDES)


def test_corrupt_truncated_and_malicious_files_are_refused_and_nothing_runs(tmp_path):
    good = save_pth(tmp_path / "good.pth", make_tensors(reference_backbone(DIM, 1, "ACT_encoder.")))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(bytes(range(256)) * 8)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    class Payload:
        def __init__(self, target: Path) -> None:
            self.target = target

        def __reduce__(self):
            return (open, (str(self.target), "w"))

    control_target, target = tmp_path / "control-ran", tmp_path / "payload-ran"
    control = tmp_path / "control.pth"
    torch.save({"base_model": {}, "x": Payload(control_target)}, control)
    torch.load(control, weights_only=False)  # the payload is live: unpickling creates a file
    assert control_target.exists()
    malicious = tmp_path / "malicious.pth"
    torch.save({"base_model": {}, "x": Payload(target)}, malicious)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"x": Payload(target)}))

    for path in (corrupt, truncated, malicious, legacy):
        with pytest.raises(CheckpointError, match=path.name):
            load_reference_checkpoint(path)
        assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
        assert not (tmp_path / "out.safetensors").exists()
    with pytest.raises(CheckpointError, match="GLOBAL"):
        load_reference_checkpoint(malicious)
    assert not target.exists()
    assert load_reference_checkpoint(good)["epoch"] == 300


def test_to_reference_refuses_what_a_layout_cannot_hold():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="layout 'classifier' only"):
        to_reference(PointClassifier(SMALL, 3), "act")
    with pytest.raises(ValueError, match="unknown layout"):
        to_reference(PointEncoder(SMALL), "timm")
    encoder_keys = to_reference(PointEncoder(SMALL), "pointmae", module_prefix=True)
    assert set(encoder_keys) == {f"module.{k}" for k in reference_backbone(DIM, DEPTH, "MAE_encoder.", cls=False)}
    latent = MaskedPointModel(MPMConfig(encoder=SMALL))
    with pytest.raises(ValueError, match="increase_dim"):
        to_reference(latent, "pointmae")

