"""Student encoder, Stage II masked point model, classifier / part-seg heads, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from act3d.eval.segmentation import (
    SHAPENETPART_CATEGORY_PARTS,
    confusion_matrix,
    part_predictions,
    part_segmentation_scores,
    segmentation_scores,
    shape_part_iou,
)
from act3d.models.classifier import PointClassifier
from act3d.models.encoder_api import load_encoder, save_encoder
from act3d.models.mpm import MaskedPointModel, MPMConfig, export_backbone
from act3d.models.partseg import PartSegmentationModel, interpolate_features
from act3d.models.student import EncoderConfig, PointEncoder, default_feature_layers

G, K, N, D = 16, 8, 96, 32


def _cfg(**overrides) -> EncoderConfig:
    values = dict(num_groups=G, group_size=K, embed_dim=D, depth=3, num_heads=2, drop_path=0.0)
    values.update(overrides)
    return EncoderConfig(**values)


def _points(batch: int = 2, n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, 3, generator=g)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- config / encoder


def test_config_presets_and_validation():
    assert EncoderConfig.paper() == EncoderConfig()
    assert (EncoderConfig.small().embed_dim, EncoderConfig.small().depth) == (256, 6)
    assert EncoderConfig.tiny(num_groups=8).num_groups == 8
    with pytest.raises(ValueError, match="valid choices"):
        EncoderConfig.preset("huge")
    with pytest.raises(ValueError, match="valid keys"):
        EncoderConfig.from_dict({"embed_dim": 64, "typo": 1})
    with pytest.raises(ValueError, match="divisible"):
        EncoderConfig(embed_dim=30, num_heads=4)
    assert EncoderConfig.from_dict(_cfg().to_dict()) == _cfg()
    assert default_feature_layers(12) == (3, 7, 11)


def test_paper_encoder_size_and_reference_names():
    enc = PointEncoder(EncoderConfig.paper())
    assert abs(sum(p.numel() for p in enc.parameters()) / 1e6 - 21.8) < 0.05
    keys = set(enc.state_dict())
    for key in (
        "cls_token", "cls_pos", "encoder.first_conv.0.weight", "encoder.first_conv.1.running_mean",
        "encoder.first_conv.3.weight", "encoder.second_conv.3.bias", "pos_embed.0.weight",
        "pos_embed.2.bias", "blocks.11.norm1.weight", "blocks.11.attn.qkv.weight",
        "blocks.11.attn.proj.bias", "blocks.11.mlp.fc2.weight", "norm.weight",
    ):  # fmt: skip
        assert key in keys, key
    assert "blocks.0.attn.qkv.bias" not in keys
    assert enc.cls_token.shape == enc.cls_pos.shape == (1, 1, 384)
    rates = [b.drop_path.p for b in enc.blocks]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.1, rel_tol=1e-6)


def test_encoder_shapes_and_head_layout():
    enc = PointEncoder(_cfg()).eval()
    pts = _points()
    patches, centers = enc.group(pts)
    assert patches.shape == (2, G, K, 3) and centers.shape == (2, G, 3)
    assert torch.equal(centers[:, 0], pts[:, 0])  # FPS starts at index 0
    assert enc.embed(patches).shape == (2, G, D)
    feats = enc.forward_features(patches, centers)
    assert feats.shape == (2, 1 + G, D)
    out = enc(pts)
    assert out.shape == (2, 2 * D) and enc.out_dim == 2 * D
    assert torch.allclose(out[:, :D], feats[:, 0])  # cls first
    assert torch.allclose(out[:, D:], feats[:, 1:].amax(dim=1))
    assert torch.isfinite(out).all()


def test_visible_mask_and_intermediate_features():
    enc = PointEncoder(_cfg()).eval()
    patches, centers = enc.group(_points())
    visible = torch.zeros(2, G, dtype=torch.bool)
    visible[0, :5] = True
    visible[1, 3:8] = True
    assert enc.forward_features(patches, centers, visible).shape == (2, 6, D)
    bad = visible.clone()
    bad[0, 10] = True
    with pytest.raises(ValueError, match="same number"):
        enc.forward_features(patches, centers, bad)
    inter = enc.intermediate_features(patches, centers, layers=(0, 2))
    assert inter.shape == (2, G, 2 * D)
    # the last block's features through the final LN are forward_features' patch outputs
    assert torch.allclose(inter[..., D:], enc.forward_features(patches, centers)[:, 1:], atol=1e-6)
    assert enc.intermediate_features(patches, centers).shape == (2, G, 3 * D)
    no_cls = enc.intermediate_features(patches, centers, layers=(2,), with_cls_token=False)
    assert no_cls.shape == (2, G, D) and not torch.allclose(no_cls, inter[..., D:])
    with pytest.raises(ValueError, match="block indices"):
        enc.intermediate_features(patches, centers, layers=(3,))


# ---------------------------------------------------------------- masked point model


def _mpm(target: str = "latent", **overrides) -> MaskedPointModel:
    return MaskedPointModel(
        MPMConfig(encoder=_cfg(), decoder_heads=2, target=target, target_dim=24, **overrides)
    )


def test_mask_counts_and_only_visible_tokens_enter_encoder():
    model = _mpm()
    patches, centers = model.student.group(_points())
    seen_encoder, seen_decoder = [], []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen_encoder.append(a[0].shape[1]))
             for b in model.student.blocks]  # fmt: skip
    hooks += [b.register_forward_pre_hook(lambda m, a: seen_decoder.append(a[0].shape[1]))
              for b in model.decoder]  # fmt: skip
    mask = model.random_mask(2, generator=torch.Generator().manual_seed(1))
    num_masked = int(0.8 * G)
    assert mask.dtype == torch.bool and (mask.sum(1) == num_masked).all()
    visible = model.forward_encoder(patches, centers, mask)
    assert visible.shape == (2, G - num_masked, D)
    pred = model.forward_decoder(visible, centers, mask)
    assert pred.shape == (2, num_masked, 24)
    assert seen_encoder == [1 + G - num_masked] * 3
    assert seen_decoder == [G] * 2
    seen_encoder.clear()
    model(patches, centers, torch.randn(2, G, 24))  # mask drawn inside
    assert seen_encoder == [1 + G - num_masked] * 3
    for h in hooks:
        h.remove()


def test_negative_cosine_loss_and_gradients():
    model = _mpm()
    t = torch.randn(2, 5, 24)
    assert torch.isclose(model.forward_loss(t, t), torch.tensor(-1.0))
    assert torch.isclose(model.forward_loss(-t, t), torch.tensor(1.0))
    patches, centers = model.student.group(_points())
    target = torch.randn(2, G, 24, requires_grad=True)
    loss = model(patches, centers, target, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and -1.0 <= loss.item() <= 1.0
    loss.backward()
    assert target.grad is None
    for name in ("cls_token", "blocks.0.attn.qkv.weight", "encoder.first_conv.0.weight"):
        grad = dict(model.student.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):
        model(patches, centers, torch.randn(2, G, 23))
    with pytest.raises(ValueError, match="valid choices"):
        MPMConfig(encoder=_cfg(), target="pixels")


def test_points_target_runs():
    model = _mpm("points")
    patches, centers = model.student.group(_points())
    mask = model.random_mask(2, generator=torch.Generator().manual_seed(0))
    pred = model.forward_decoder(model.forward_encoder(patches, centers, mask), centers, mask)
    assert pred.shape == (2, int(0.8 * G), K * 3)
    loss = model(patches, centers, mask=mask)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.proj_head.weight.grad is not None


def test_short_training_lowers_mpm_loss():
    model = _mpm(decoder_drop_path=0.0)
    patches, centers = model.student.group(_points(seed=3))
    target = torch.randn(2, G, 24, generator=torch.Generator().manual_seed(4))
    mask = model.random_mask(2, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = model(patches, centers, target, mask=mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


# ---------------------------------------------------------------- classifier


@pytest.mark.parametrize("mode", ["full", "mlp3", "linear"])
def test_classifier_modes_freeze_the_right_parameters(mode):
    model = PointClassifier(_cfg(drop_path=0.5), num_classes=5, mode=mode).train()
    pts = _points(batch=4)
    bn = model.backbone.encoder.first_conv[1]
    stats_before = bn.running_mean.clone()
    logits = model(pts)
    assert logits.shape == (4, 5)
    logits.sum().backward()
    backbone_grads = [p.grad for p in model.backbone.parameters()]
    head_grads = [p.grad for p in model.cls_head_finetune.parameters()]
    assert all(g is not None for g in head_grads)
    if mode == "full":
        assert model.backbone.training
        assert not torch.equal(model.features(pts), model.features(pts))  # drop path on
        assert all(g is not None for g in backbone_grads)
        assert not torch.equal(bn.running_mean, stats_before)
    else:
        assert not model.backbone.training and model.cls_head_finetune.training
        assert all(not p.requires_grad for p in model.backbone.parameters())
        assert all(g is None for g in backbone_grads)
        assert torch.equal(bn.running_mean, stats_before)  # frozen BN keeps its statistics
        assert torch.equal(model.features(pts), model.features(pts))  # no drop path
    assert model.features(pts).shape == (4, 2 * D)


def test_classifier_head_keys_match_reference():
    full = PointClassifier(_cfg(), num_classes=7, mode="full")
    head_keys = {k for k in full.state_dict() if k.startswith("cls_head_finetune.")}
    indices = {k.split(".")[1] for k in head_keys}
    assert indices == {"0", "1", "4", "5", "8"}
    assert isinstance(full.cls_head_finetune[0], torch.nn.Linear)
    assert isinstance(full.cls_head_finetune[1], torch.nn.BatchNorm1d)
    assert isinstance(full.cls_head_finetune[3], torch.nn.Dropout)
    assert full.cls_head_finetune[3].p == 0.5
    assert full.cls_head_finetune[0].in_features == 2 * D
    assert full.cls_head_finetune[8].out_features == 7
    linear = PointClassifier(_cfg(), num_classes=7, mode="linear")
    assert {k for k in linear.state_dict() if k.startswith("cls_head_finetune.")} == {
        "cls_head_finetune.0.weight",
        "cls_head_finetune.0.bias",
    }
    with pytest.raises(ValueError, match="valid choices"):
        PointClassifier(_cfg(), num_classes=7, mode="mlp-3")


def test_export_save_load_backbone_matches_every_key(tmp_path):
    mpm = _mpm()
    exported = export_backbone(mpm)
    assert set(exported) == set(PointEncoder(_cfg()).state_dict())
    path = save_encoder(mpm.student, tmp_path / "backbone.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.safetensors"]  # no temp left
    clf = PointClassifier(_cfg(), num_classes=3, mode="linear")
    report = clf.load_backbone(load_file(str(path)))
    assert report.missing == () and report.unexpected == ()
    assert set(report.loaded) == set(exported)
    for key, value in clf.backbone.state_dict().items():
        assert torch.equal(value, exported[key]), key
    assert all(not p.requires_grad for p in clf.backbone.parameters())
    # failures are loud and name the keys
    prefixed = {f"MAE_encoder.{k}": v for k, v in exported.items()}
    with pytest.raises(ValueError, match="missing.*cls_token"):
        clf.load_backbone(prefixed)
    report = clf.load_backbone({**exported, "lm_head.weight": torch.zeros(1)}, strict=False)
    assert report.unexpected == ("lm_head.weight",)
    with pytest.raises(ValueError, match="lm_head.weight"):
        clf.load_backbone({**exported, "lm_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="norm.weight"):
        clf.load_backbone({**exported, "norm.weight": torch.zeros(D + 1)})


def test_load_encoder_round_trip_and_errors(tmp_path):
    enc = PointEncoder(_cfg(embed_dim=16, depth=2)).eval()
    path = save_encoder(enc, tmp_path / "enc.safetensors")
    loaded = load_encoder(path)
    assert isinstance(loaded, PointEncoder) and not loaded.training
    assert loaded.config == enc.config
    pts = _points()
    with torch.no_grad():
        assert torch.equal(loaded(pts), enc(pts))
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    missing = {k: v for k, v in state.items() if k != "cls_pos"}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"missing\.safetensors.*cls_pos"):
        load_encoder(tmp_path / "missing.safetensors")
    state["norm.bias"] = torch.zeros(3)
    save_file(state, str(tmp_path / "shape.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match=r"shape\.safetensors.*norm\.bias"):
        load_encoder(tmp_path / "shape.safetensors")
    save_file(missing, str(tmp_path / "nometa.safetensors"))
    with pytest.raises(ValueError, match="nometa"):
        load_encoder(tmp_path / "nometa.safetensors")


# ---------------------------------------------------------------- part segmentation


def test_partseg_shapes_and_category_branch():
    model = PartSegmentationModel(
        _cfg(), num_parts=6, num_categories=3, propagation_dims=(48, 40), head_dims=(32, 16)
    )
    assert model.layers == (0, 1, 2)
    pts = _points(batch=3)
    logits = model(pts, torch.tensor([0, 2, 1]))
    assert logits.shape == (3, N, 6) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None
    with pytest.raises(ValueError, match="category"):
        model(pts)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(pts, torch.tensor([0, 3, 1]))
    scene = PartSegmentationModel(
        _cfg(), num_parts=4, num_categories=0, propagation_dims=(48, 40), head_dims=(32, 16)
    )
    assert scene.category_embed is None
    assert scene(pts).shape == (3, N, 4)
    with pytest.raises(ValueError, match="no category branch"):
        scene(pts, torch.tensor([0, 1, 2]))
    paper_head = PartSegmentationModel(EncoderConfig.paper(num_groups=128)).head[0]
    assert paper_head.in_channels == 1024 + 2 * 1152 + 64  # 3392 as the reference


def test_interpolation_matches_brute_force():
    g = torch.Generator().manual_seed(7)
    query = torch.randn(2, 50, 3, generator=g)
    centers = torch.randn(2, 9, 3, generator=g)
    feats = torch.randn(2, 9, 5, generator=g)
    out = interpolate_features(query, centers, feats)
    expected = torch.empty(2, 50, 5)
    for b in range(2):
        for i in range(50):
            d2 = ((centers[b] - query[b, i]) ** 2).sum(-1)
            order = torch.argsort(d2)[:3]
            w = 1.0 / (d2[order] + 1e-8)
            expected[b, i] = (feats[b, order] * (w / w.sum())[:, None]).sum(0)
    assert torch.allclose(out, expected, atol=1e-5)
    at_centers = interpolate_features(centers, centers, feats)
    assert torch.allclose(at_centers, feats, atol=1e-4)


# ---------------------------------------------------------------- metrics


def test_part_iou_metrics_by_hand():
    parts = (0, 1, 2)
    # part 0: I=1 U=2 -> .5; part 1: I=1 U=2 -> .5; part 2 absent in both -> 1
    assert math.isclose(shape_part_iou([0, 0, 1], [0, 1, 1], parts), (0.5 + 0.5 + 1) / 3)
    assert math.isclose(shape_part_iou([0, 1, 1], [0, 0, 1], parts), (0.5 + 0.5 + 1) / 3)
    assert shape_part_iou([1, 1], [1, 1], parts) == 1.0
    assert shape_part_iou([0, 0], [1, 1], parts) == pytest.approx(1 / 3)
    cat_parts = ((0, 1), (2, 3))
    preds = [np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([2, 2, 3, 3])]
    gts = [np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), np.array([3, 3, 3, 3])]
    scores = part_segmentation_scores(preds, gts, [0, 0, 1], cat_parts)
    # shape ious: 1, (1/2 + 2/3)/2 = 7/12, (0 + 1/2)/2 = 1/4
    assert scores.shape_ious == pytest.approx((1.0, 7 / 12, 0.25))
    assert scores.instance_miou == pytest.approx((1 + 7 / 12 + 0.25) / 3)
    assert scores.class_miou == pytest.approx(((1 + 7 / 12) / 2 + 0.25) / 2)
    assert scores.category_miou == pytest.approx({0: (1 + 7 / 12) / 2, 1: 0.25})
    logits = torch.zeros(2, 3, 50)
    logits[..., 49] = 10.0  # a Table part wins everywhere unless restricted
    logits[0, :, 1] = 1.0
    pred = part_predictions(logits, torch.tensor([0, 15]))
    assert (pred[0] == 1).all() and (pred[1] == 49).all()
    assert SHAPENETPART_CATEGORY_PARTS[0] == (0, 1, 2, 3)
    assert SHAPENETPART_CATEGORY_PARTS[15] == (47, 48, 49)
    assert sum(len(p) for p in SHAPENETPART_CATEGORY_PARTS) == 50


def test_confusion_matrix_scores_by_hand():
    gt = np.array([0, 0, 0, 1, 1, 2, -1])
    pred = np.array([0, 0, 1, 1, 2, 2, 0])
    conf = confusion_matrix(pred, gt, num_classes=4, ignore_index=-1)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[1, 2], expected[2, 2] = 2, 1, 1, 1, 1
    assert np.array_equal(conf, expected)
    s = segmentation_scores(conf)
    # IoU: c0 2/3, c1 1/3, c2 1/2, c3 absent -> NaN, excluded
    assert s.iou[:3] == pytest.approx([2 / 3, 1 / 3, 1 / 2]) and np.isnan(s.iou[3])
    assert s.miou == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert s.macc == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert s.oa == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="labels"):
        confusion_matrix(np.array([5]), np.array([0]), num_classes=4)
