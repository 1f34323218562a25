"""Training-step throughput of act3d against the same step built the straightforward way.

For each stage (Stage I autoencoder, Stage II masked point modelling, fine-tuning) and each
model size (``tiny``, ``small``: act3d's CPU presets; ``paper``: the paper's student), one
training step is forward + backward + AdamW step on a batch of synthetic clouds:

- **stage1**: FPS + kNN grouping, :class:`ACTAutoencoder` with a MiniLM-shaped teacher
  (``random:minilm``: 6 x 384, random weights, frozen, with prompts), Gumbel-softmax at
  tau=1, loss CD-L1(coarse) + CD-L1(fine) + 0.1 KL.
- **stage2**: scale/translate augmentation, grouping, the frozen Stage I model's targets
  (``clean``: argmax code, eval mode, no gradient), :class:`MaskedPointModel` loss.
- **finetune**: grouping inside the classifier, :class:`PointClassifier` (full mode, 40
  classes), cross-entropy, gradient clipping at 10.

Two builds of each step, in the same process, on the same weights and inputs:

- **act3d**: ``act3d.ops`` fast paths (numba FPS/kNN on CPU, nearest-neighbour Chamfer),
  fused attention (``scaled_dot_product_attention``; the Hugging Face teacher's ``sdpa``),
  DGCNN by per-node projections, mini-PointNet and folding decoder as channels-last
  matrix products (the decoder's token term once per patch).
- **baseline**: ``farthest_point_sample_naive`` (Python loop), ``knn_naive`` (full distance
  matrix by matmul), ``chamfer_distance_naive`` (``torch.cdist``), attention written out
  (``fused=False``; the teacher's ``eager`` attention), DGCNN by convolving explicit edge
  features (``DGCNN.forward_naive``), mini-PointNet and folding decoder as the reference's
  channels-first ``Conv1d`` stacks (``PatchEmbed.forward_naive``,
  ``FoldingDecoder.forward_naive``).

Before timing, the two builds are checked to give the same loss on the same seed, and the
act3d step to give the library's own loss (``autoencoder_loss``, ``Stage2Task``,
``PointClassifier.forward``).

Reported per (stage, size): samples/s of both (median step time over --repeats, the two
builds alternating so machine noise hits both alike) and their ratio; peak memory a step
adds (see ``_common.PeakMemory``: the kernel's resident high-water mark, not tracemalloc,
which cannot see torch's allocations); the share of the act3d step spent in grouping
(FPS + kNN + gather; a grouping table also times its FPS and its kNN search on their own,
act3d against the baseline's Python-loop FPS and matmul kNN), Chamfer (forward + backward) and the Transformer blocks (forward +
backward; Stage II also the teacher's no-grad Transformer pass), each timed on its own on
the step's inputs/shapes; FLOPs of one step and of the Transformer part
(``torch.utils.flop_counter.FlopCounterMode``; counted with attention written out, since
the counter does not see CPU ``scaled_dot_product_attention``) and the achieved GFLOP/s,
against the measured fp32 matmul rate of the machine (2048 x 2048, median).

Threads: one by default. On a machine whose cores are shared with other work, more torch
threads than free cores make every parallel region wait for a descheduled thread (measured
here: a tiny Stage I step took 6-11 s with 2 threads and 1.1 s with 1, at load average 10
on 2 cores); pass ``--threads`` to use more on an idle machine.

    python benchmarks/train_throughput.py [--batch 16] [--repeats 5] [--threads 1]
        [--sizes tiny,small,paper] [--stages stage1,stage2,finetune] [--bf16] [--quick]
        [--json FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from act3d import ops  # noqa: E402
from act3d.config import load_config  # noqa: E402
from act3d.models.autoencoder import ACTAutoencoder, AutoencoderConfig, autoencoder_loss  # noqa: E402
from act3d.models.blocks import Attention  # noqa: E402
from act3d.models.classifier import PointClassifier  # noqa: E402
from act3d.models.dgcnn import DGCNN  # noqa: E402
from act3d.models.foldingnet import FoldingDecoder  # noqa: E402
from act3d.models.patch_embed import PatchEmbed  # noqa: E402
from act3d.models.dvae import kl_to_uniform  # noqa: E402
from act3d.models.student import EncoderConfig  # noqa: E402
from act3d.models.teachers import build_teacher  # noqa: E402
from act3d.models.teachers.hf import HFTeacher  # noqa: E402
from act3d.train.optim import param_groups  # noqa: E402
from act3d.train.stage2 import Stage2Config, Stage2ModelConfig, Stage2Task  # noqa: E402

SIZES = ("tiny", "small", "paper")
STAGES = ("stage1", "stage2", "finetune")
KL_WEIGHT = 0.1
NUM_CLASSES = 40
MATMUL_N = 2048
PHASE_LABELS = {"group": "group", "chamfer": "chamfer", "transformer": "transformer",
                "embed": "patch embed", "dgcnn": "DGCNN", "decoder": "decoder"}
# the two searches inside "group", timed on their own (not part of the shares' sum)
GROUP_PARTS = ("fps", "knn")


# ----------------------------------------------------------------------------- builds


@dataclass(frozen=True)
class Impl:
    """One way to build the step: which ops and which attention/DGCNN code paths."""

    name: str
    group: Callable[[Tensor, int, int], tuple[Tensor, Tensor]]
    fps: Callable[[Tensor, int], Tensor]
    knn: Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]
    chamfer: Callable[..., Tensor]
    fused_attention: bool
    naive_layers: bool
    bf16: bool = False
    device_type: str = "cpu"

    def autocast(self) -> Any:
        """The forward's autocast context (bf16, as ``runtime.precision=bf16``)."""
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16)


ACT3D = Impl("act3d", ops.group, ops.farthest_point_sample, ops.knn, ops.chamfer_distance, True, False)
BASELINE = Impl("baseline", ops.group_naive, ops.farthest_point_sample_naive, ops.knn_naive,
                ops.chamfer_distance_naive, False, True)
# act3d under bf16 autocast (what `--set runtime.precision=bf16` trains with), only with --bf16
ACT3D_BF16 = dataclasses.replace(ACT3D, name="act3d_bf16", bf16=True)
# act3d's ops with attention written out: only for counting FLOPs (see the docstring).
COUNTING = dataclasses.replace(ACT3D, name="counting", fused_attention=False)


def configure(model: nn.Module, impl: Impl) -> None:
    """Switch every attention, DGCNN, mini-PointNet and folding decoder inside ``model`` to
    ``impl``'s code path."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused = impl.fused_attention
        elif isinstance(module, HFTeacher):
            module.config._attn_implementation = "sdpa" if impl.fused_attention else "eager"
        elif isinstance(module, (DGCNN, PatchEmbed, FoldingDecoder)):
            if impl.naive_layers:
                module.forward = module.forward_naive  # instance attribute wins over the class
            else:
                module.__dict__.pop("forward", None)


# ----------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Grouping:
    num_points: int
    num_groups: int
    group_size: int


def grouping_of(size: str) -> Grouping:
    """The grouping of act3d's Stage II preset of that size (``configs/pretrain/<size>.yaml``),
    used for all three stages of that size."""
    cfg = load_config(Stage2Config, size, stage="pretrain")
    return Grouping(cfg.data.num_points, cfg.model.num_groups, cfg.model.group_size)


def stage1_config(size: str, g: Grouping) -> tuple[AutoencoderConfig, str]:
    """The Stage I model: the ``pretrain-teacher`` preset when it exists with this grouping,
    else :meth:`AutoencoderConfig.preset` on the grouping. Returns (config, where from)."""
    from act3d.train.stage1 import Stage1Config

    try:
        cfg = load_config(Stage1Config, size, stage="pretrain-teacher")
    except (FileNotFoundError, ValueError):
        cfg = None
    if cfg is not None and (cfg.model.num_groups, cfg.model.group_size) == (g.num_groups, g.group_size):
        return cfg.model, f"configs/pretrain-teacher/{size}.yaml"
    model = AutoencoderConfig.preset(size, num_groups=g.num_groups, group_size=g.group_size)
    return model, f"AutoencoderConfig.{size}()"


def _clouds(batch: int, num_points: int, labeled: bool) -> tuple[Tensor, Tensor]:
    from act3d.data import build_dataset

    split = "train" if labeled else "pretrain"
    ds = build_dataset("synthetic", split, num_points, train=True, sampling="random", num_samples=batch)
    points = torch.stack([ds[i]["points"] for i in range(batch)])
    labels = torch.arange(batch) % NUM_CLASSES
    return points, labels


def _optimizer(model: nn.Module, weight_decay: float) -> torch.optim.Optimizer:
    # A tiny lr keeps the weights (and so the timing) essentially fixed over the repeats.
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=1e-7)


# ----------------------------------------------------------------------------- workloads


class Workload:
    """One stage at one size: a model, a batch, the step and its phases."""

    stage: str
    model: nn.Module
    optimizer: torch.optim.Optimizer

    def __init__(self, size: str, batch: int) -> None:
        self.size = size
        self.batch = batch
        self.g = grouping_of(size)
        self.notes: list[str] = []

    def loss(self, impl: Impl) -> Tensor:
        raise NotImplementedError

    def reference_loss(self) -> Tensor:
        """The library's own loss for this step (act3d ops)."""
        raise NotImplementedError

    def step(self, impl: Impl) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with impl.autocast():
            loss = self.loss(impl)
        loss.backward()
        self.optimizer.step()

    def phases(self, impl: Impl) -> dict[str, Callable[[], Any]]:
        """Name -> a callable doing that part of the step on the step's inputs/shapes."""
        raise NotImplementedError

    def _group(self, impl: Impl, points: Tensor) -> dict[str, Callable[[], Any]]:
        """The grouping of ``points`` (FPS + kNN + gather) and, on their own, its FPS and its
        kNN search (the patch centers precomputed)."""
        g = self.g
        with torch.no_grad():
            centers = ops.gather_points(points, ops.farthest_point_sample(points, g.num_groups))

        def group() -> Any:
            with torch.no_grad():
                return impl.group(points, g.num_groups, g.group_size)

        def fps() -> Any:
            with torch.no_grad():
                return impl.fps(points, g.num_groups)

        def knn() -> Any:
            with torch.no_grad():
                return impl.knn(centers, points, g.group_size)

        return {"group": group, "fps": fps, "knn": knn}


def _blocks_fwd_bwd(blocks: nn.ModuleList, norm: nn.Module, x: Tensor, pos: Tensor) -> Tensor:
    """``x = block(x + pos)`` over ``blocks``, then ``norm``: the Transformer part of a model."""
    for block in blocks:
        x = block(x + pos)
    return norm(x)


class Stage1(Workload):
    stage = "stage1"

    def __init__(self, size: str, batch: int) -> None:
        super().__init__(size, batch)
        self.cfg, where = stage1_config(size, self.g)
        self.notes.append(
            f"Stage I `{size}`: {self.g.num_points} points in {self.g.num_groups} patches of "
            f"{self.g.group_size}; {where} (C={self.cfg.token_dim}, {self.cfg.num_codes} codes, "
            f"DGCNN {list(self.cfg.dgcnn_widths)}, {self.cfg.num_prompts} prompts) + random:minilm"
        )
        self.model = ACTAutoencoder(self.cfg, build_teacher("random:minilm"))
        self.model.train()
        self.points, _ = _clouds(batch, self.g.num_points, labeled=False)
        self.optimizer = _optimizer(self.model, 5e-4)

    def _loss_from(self, impl: Impl, patches: Tensor, centers: Tensor) -> Tensor:
        out = self.model(patches, centers, tau=1.0)
        B, G, k, _ = patches.shape
        target = patches.reshape(B * G, k, 3)
        # Chamfer in fp32 (a no-op without autocast; under bf16 the decoder's output is bf16)
        cd_coarse = impl.chamfer(out.coarse.float().reshape(B * G, -1, 3), target, norm=1)
        cd_fine = impl.chamfer(out.fine.float().reshape(B * G, -1, 3), target, norm=1)
        return cd_coarse + cd_fine + KL_WEIGHT * kl_to_uniform(out.logits)

    def loss(self, impl: Impl) -> Tensor:
        with torch.no_grad():
            patches, centers = impl.group(self.points, self.g.num_groups, self.g.group_size)
        return self._loss_from(impl, patches, centers)

    def reference_loss(self) -> Tensor:
        with torch.no_grad():
            patches, centers = ops.group(self.points, self.g.num_groups, self.g.group_size)
        out = self.model(patches, centers, tau=1.0)
        return autoencoder_loss(out, patches, KL_WEIGHT)["loss"]

    def phases(self, impl: Impl) -> dict[str, Callable[[], Any]]:
        g = self.g
        with torch.no_grad():
            patches, centers = ops.group(self.points, g.num_groups, g.group_size)
            out = self.model(patches, centers, tau=1.0)
        B, G, k, _ = patches.shape
        target = patches.reshape(B * G, k, 3)
        coarse = out.coarse.reshape(B * G, -1, 3).clone().requires_grad_()
        fine = out.fine.reshape(B * G, -1, 3).clone().requires_grad_()
        tokens = out.tokens.clone().requires_grad_()

        def chamfer() -> None:
            coarse.grad = fine.grad = None
            (impl.chamfer(coarse, target, norm=1) + impl.chamfer(fine, target, norm=1)).backward()

        def transformer() -> None:
            self.model.zero_grad(set_to_none=True)
            tokens.grad = None
            self.model.forward_teacher(tokens, centers).sum().backward()

        m = self.model
        embedded = m.encoder(patches).detach().requires_grad_()
        mixed = out.latent.clone().requires_grad_()
        latent = out.latent.clone().requires_grad_()

        def embed() -> None:
            m.zero_grad(set_to_none=True)
            m.encoder(patches).sum().backward()

        def dgcnn() -> None:
            m.zero_grad(set_to_none=True)
            embedded.grad = mixed.grad = None
            (m.dgcnn_1(embedded, centers).sum() + m.dgcnn_2(mixed, centers).sum()).backward()

        def decoder() -> None:
            m.zero_grad(set_to_none=True)
            latent.grad = None
            coarse_out, fine_out = m.decoder(latent)
            (coarse_out.sum() + fine_out.sum()).backward()

        return {**self._group(impl, self.points), "chamfer": chamfer, "transformer": transformer,
                "embed": embed, "dgcnn": dgcnn, "decoder": decoder}


class Stage2(Workload):
    stage = "stage2"

    def __init__(self, size: str, batch: int) -> None:
        super().__init__(size, batch)
        tcfg, where = stage1_config(size, self.g)
        teacher = ACTAutoencoder(tcfg, build_teacher("random:minilm"))
        cfg = Stage2Config(
            model=Stage2ModelConfig(encoder=size, num_groups=self.g.num_groups, group_size=self.g.group_size),
            target="clean",
        )
        self.task = Stage2Task(cfg, teacher=teacher)
        self.teacher = teacher
        self.model = self.task.build_model()
        self.model.train()
        self.notes.append(
            f"Stage II `{size}`: {self.g.num_points} points in {self.g.num_groups} patches of "
            f"{self.g.group_size}; student {size} ({cfg.model.encoder_config().depth} blocks, "
            f"{cfg.model.encoder_config().embed_dim}-d), target `clean` from the Stage I `{size}` "
            f"model ({where}, random:minilm)"
        )
        self.points, _ = _clouds(batch, self.g.num_points, labeled=False)
        self.optimizer = _optimizer(self.model, 0.05)

    def _targets(self, patches: Tensor, centers: Tensor) -> Tensor:
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher.latent_features(patches, centers, code="argmax", output="dgcnn")

    def loss(self, impl: Impl) -> Tensor:
        points = self.task.augment(self.points)
        patches, centers = impl.group(points, self.g.num_groups, self.g.group_size)
        return self.model(patches, centers, self._targets(patches, centers))

    def reference_loss(self) -> Tensor:
        return self.task.training_step(self.model, {"points": self.points}, 0)[0]

    def phases(self, impl: Impl) -> dict[str, Callable[[], Any]]:
        g, mpm = self.g, self.model
        points = self.task.augment(self.points)
        with torch.no_grad():
            patches, centers = ops.group(points, g.num_groups, g.group_size)
            tokens = self.teacher.codebook.embed(
                self.teacher.codebook.sample_codes(self.teacher.tokenize(patches, centers), "argmax")
            )
        B, D = self.batch, mpm.config.encoder.embed_dim
        visible = g.num_groups - int(mpm.config.mask_ratio * g.num_groups)
        x_enc = torch.randn(B, 1 + visible, D, requires_grad=True)
        pos_enc = torch.randn(B, 1 + visible, D)
        x_dec = torch.randn(B, g.num_groups, D, requires_grad=True)
        pos_dec = torch.randn(B, g.num_groups, D)

        def transformer() -> None:
            mpm.zero_grad(set_to_none=True)
            x_enc.grad = x_dec.grad = None
            enc = _blocks_fwd_bwd(mpm.student.blocks, mpm.student.norm, x_enc, pos_enc)
            dec = _blocks_fwd_bwd(mpm.decoder, mpm.decoder_norm, x_dec, pos_dec)
            (enc.sum() + dec.sum()).backward()
            with torch.no_grad():
                self.teacher.forward_teacher(tokens, centers)

        t = self.teacher
        with torch.no_grad():
            t_embedded = t.encoder(patches)
            t_mixed = t.forward_teacher(tokens, centers)

        def embed() -> None:
            mpm.zero_grad(set_to_none=True)
            mpm.student.embed(patches).sum().backward()
            with torch.no_grad():
                t.encoder(patches)

        def dgcnn() -> None:
            with torch.no_grad():
                t.dgcnn_1(t_embedded, centers)
                t.dgcnn_2(t_mixed, centers)

        return {**self._group(impl, points), "transformer": transformer, "embed": embed, "dgcnn": dgcnn}


class Finetune(Workload):
    stage = "finetune"

    def __init__(self, size: str, batch: int) -> None:
        super().__init__(size, batch)
        enc = EncoderConfig.preset(size, num_groups=self.g.num_groups, group_size=self.g.group_size)
        self.model = PointClassifier(enc, NUM_CLASSES, mode="full")
        self.model.train()
        self.notes.append(
            f"fine-tune `{size}`: {self.g.num_points} points in {self.g.num_groups} patches of "
            f"{self.g.group_size}; PointClassifier full, {enc.depth} blocks, {enc.embed_dim}-d, 40 classes"
        )
        self.points, self.labels = _clouds(batch, self.g.num_points, labeled=True)
        self.optimizer = _optimizer(self.model, 0.05)

    def loss(self, impl: Impl) -> Tensor:
        patches, centers = impl.group(self.points, self.g.num_groups, self.g.group_size)
        backbone = self.model.backbone
        features = backbone.forward_head(backbone.forward_features(patches, centers))
        return F.cross_entropy(self.model.cls_head_finetune(features), self.labels)

    def reference_loss(self) -> Tensor:
        return F.cross_entropy(self.model(self.points), self.labels)

    def step(self, impl: Impl) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with impl.autocast():
            loss = self.loss(impl)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()

    def phases(self, impl: Impl) -> dict[str, Callable[[], Any]]:
        backbone = self.model.backbone
        B, T, D = self.batch, 1 + self.g.num_groups, backbone.embed_dim
        x = torch.randn(B, T, D, requires_grad=True)
        pos = torch.randn(B, T, D)

        def transformer() -> None:
            self.model.zero_grad(set_to_none=True)
            x.grad = None
            _blocks_fwd_bwd(backbone.blocks, backbone.norm, x, pos).sum().backward()

        with torch.no_grad():
            patches, _ = ops.group(self.points, self.g.num_groups, self.g.group_size)

        def embed() -> None:
            self.model.zero_grad(set_to_none=True)
            backbone.embed(patches).sum().backward()

        return {**self._group(impl, self.points), "transformer": transformer, "embed": embed}


WORKLOADS: dict[str, type[Workload]] = {"stage1": Stage1, "stage2": Stage2, "finetune": Finetune}


# ----------------------------------------------------------------------------- measuring


def _seeded(fn: Callable[[], Tensor], seed: int = 1234) -> Tensor:
    torch.manual_seed(seed)
    return fn().detach()


def check_same_step(w: Workload) -> str:
    """Both builds and the library give the same loss on the same seed; returns a summary."""
    _configure(w, ACT3D)
    ours = _seeded(lambda: w.loss(ACT3D))
    library = _seeded(w.reference_loss)
    _configure(w, BASELINE)
    baseline = _seeded(lambda: w.loss(BASELINE))
    _configure(w, ACT3D)
    for name, value in (("library", library), ("baseline", baseline)):
        if not torch.allclose(ours, value, rtol=1e-4, atol=1e-5):
            raise AssertionError(
                f"{w.stage}/{w.size}: act3d step loss {ours.item():.6f} != {name} {value.item():.6f}"
            )
    return f"{ours.item():.5f} (library {library.item():.5f}, baseline {baseline.item():.5f})"


def _alternating(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and process-CPU seconds of each callable, run in turn ``repeats`` times
    after one warm-up round."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return ({k: statistics.median(v) for k, v in wall.items()},
            {k: statistics.median(v) for k, v in cpu.items()})


def _configure(w: Workload, impl: Impl) -> None:
    configure(w.model, impl)
    if isinstance(w, Stage2):
        configure(w.teacher, impl)


def _with_impl(w: Workload, impl: Impl, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        _configure(w, impl)
        return fn()

    return run


def _flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _matmul_fn(n: int = MATMUL_N) -> Callable[[], Any]:
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    return lambda: torch.matmul(a, b, out=out)


def measure(w: Workload, repeats: int, memory: _common.PeakMemory, bf16: bool) -> dict[str, Any]:
    impls = (ACT3D, BASELINE)
    result: dict[str, Any] = {"stage": w.stage, "size": w.size, "batch": w.batch, "notes": w.notes,
                              "grouping": f"{w.batch} x {w.g.num_points} -> {w.g.num_groups} x {w.g.group_size}"}
    result["check"] = check_same_step(w)
    # peak memory of one step (after one warm-up step that also creates the AdamW state)
    for impl in impls:
        result[f"{impl.name}_peak_bytes"] = memory.measure(_with_impl(w, impl, lambda i=impl: w.step(i)))
    # whole steps of every build, the parts of the step and the matmul reference, all in the
    # same alternating rounds, so shares and rates compare numbers taken under the same load
    timed = impls + ((ACT3D_BF16,) if bf16 else ())
    fns: dict[str, Callable[[], Any]] = {i.name: _with_impl(w, i, lambda i=i: w.step(i)) for i in timed}
    fns["matmul"] = _matmul_fn()
    for impl in impls:
        for name, fn in w.phases(impl).items():
            fns[f"{impl.name}:{name}"] = _with_impl(w, impl, fn)
    times, cpu_times = _alternating(fns, repeats)
    for impl in timed:
        result[f"{impl.name}_step_s"] = times[impl.name]
        result[f"{impl.name}_samples_per_s"] = w.batch / times[impl.name]
        result[f"{impl.name}_step_cpu_s"] = cpu_times[impl.name]
    result["ratio"] = times[BASELINE.name] / times[ACT3D.name]
    result["cpu_ratio"] = cpu_times[BASELINE.name] / cpu_times[ACT3D.name]
    for key, seconds in times.items():
        if ":" in key:
            result[f"{key}_s"] = seconds
    result["matmul_gflops"] = 2.0 * MATMUL_N**3 / times["matmul"] / 1e9
    # FLOPs with attention written out (the counter misses fused CPU attention)
    result["step_flops"] = _flops(_with_impl(w, COUNTING, lambda: w.loss(COUNTING).backward()))
    w.optimizer.zero_grad(set_to_none=True)
    result["transformer_flops"] = _flops(_with_impl(w, COUNTING, w.phases(COUNTING)["transformer"]))
    _configure(w, ACT3D)
    return result


# ----------------------------------------------------------------------------- report


def _pct(part: float | None, whole: float) -> str:
    return "–" if part is None else f"{100 * part / whole:.1f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{1e3 * seconds:.2f}"


def grouping_report(results: list[dict[str, Any]]) -> list[str]:
    """The grouping table: FPS + kNN + gather of each step's batch, act3d vs baseline, with
    the FPS and the kNN search timed on their own (same rounds as the step)."""
    lines = [
        "Grouping (FPS + kNN + gather of the step's batch, no gradient), timed in the same rounds "
        "as the steps: milliseconds per batch for the whole grouping and, on their own, its FPS "
        "(N points -> G centers) and its kNN search (k nearest of the N points to each of the G "
        "centers); the rest (grouping - FPS - kNN) is the gathers, the centring and call overhead. The "
        "baseline groups with `farthest_point_sample_naive` (Python loop over the G picks) and "
        "`knn_naive` (the full (G, N) distance matrix, then a stable sort).",
        "",
    ]
    header = ["stage", "size", "B x N -> G x k", "act3d group ms", "act3d FPS ms", "act3d kNN ms",
              "baseline group ms", "baseline FPS ms", "baseline kNN ms", "group: baseline / act3d",
              "FPS: baseline / act3d", "kNN: baseline / act3d", "act3d clouds grouped/s",
              "group % of act3d step", "group % of baseline step"]
    rows = []
    for r in results:
        if "act3d:group_s" not in r:
            continue
        a = {k: r.get(f"act3d:{k}_s") for k in ("group", *GROUP_PARTS)}
        b = {k: r.get(f"baseline:{k}_s") for k in ("group", *GROUP_PARTS)}
        ratios = [("–" if a[k] is None or b[k] is None else f"{b[k] / a[k]:.1f}x") for k in ("group", *GROUP_PARTS)]
        rows.append([
            r["stage"], r["size"], r.get("grouping", "–"),
            _ms(a["group"]), _ms(a["fps"]), _ms(a["knn"]), _ms(b["group"]), _ms(b["fps"]), _ms(b["knn"]),
            *ratios, f"{r['batch'] / a['group']:.0f}",
            _pct(a["group"], r["act3d_step_s"]), _pct(b["group"], r["baseline_step_s"]),
        ])  # fmt: skip
    if rows:
        lines += [_common.markdown_table(header, rows), ""]
    return lines


def report(results: list[dict[str, Any]], args: argparse.Namespace, memory: _common.PeakMemory,
           seconds: float, matmul_start_end: tuple[float, float]) -> str:
    lines = ["### One training step (forward + backward + AdamW), act3d vs the straightforward build", ""]
    lines += _common.machine_lines(args.threads)
    lines += [
        f"- command: `{_common.command_line()}` (wall time {seconds / 60:.1f} min)",
        f"- batch {args.batch}; medians of {args.repeats} rounds after one warm-up round; each round "
        "runs one step of every build, each part of the step on its own and one fp32 matmul "
        f"({MATMUL_N} x {MATMUL_N}), so all of them are measured under the same machine load",
        "- matmul rate alone at the start / end of the run: "
        f"{matmul_start_end[0]:.1f} / {matmul_start_end[1]:.1f} GFLOP/s",
        f"- peak memory: {memory.describe()}",
        "- samples/s and ratios are wall-clock; the CPU-time columns use the process CPU time of "
        "the same steps (with one thread it is the work done, whatever share of a core the "
        "process got)",
        "",
    ]
    bf16 = any("act3d_bf16_step_s" in r for r in results)
    header = ["stage", "size", "act3d samples/s", "baseline samples/s", "act3d / baseline",
              "act3d / baseline (CPU time)", "act3d samples per CPU-s"]
    header += ["act3d bf16 samples/s", "bf16 / fp32"] if bf16 else []
    header += ["act3d peak MiB", "baseline peak MiB", "step GFLOP", "act3d step GFLOP/s"]
    rows = []
    for r in results:
        row = [r["stage"], r["size"], f"{r['act3d_samples_per_s']:.2f}", f"{r['baseline_samples_per_s']:.2f}",
               f"**{r['ratio']:.2f}x**", f"{r['cpu_ratio']:.2f}x", f"{r['batch'] / r['act3d_step_cpu_s']:.2f}"]
        if bf16:
            if "act3d_bf16_step_s" in r:
                row += [f"{r['act3d_bf16_samples_per_s']:.2f}", f"{r['act3d_step_s'] / r['act3d_bf16_step_s']:.2f}x"]
            else:
                row += ["–", "–"]
        row += [_common.fmt_mb(r["act3d_peak_bytes"]), _common.fmt_mb(r["baseline_peak_bytes"]),
                f"{r['step_flops'] / 1e9:.1f}", f"{r['step_flops'] / 1e9 / r['act3d_step_s']:.1f}"]
        rows.append(row)
    lines += [_common.markdown_table(header, rows), ""]
    lines += [
        "Where the step's time goes: each part timed on its own on the step's inputs / shapes, "
        "as % of the same build's step time. group = FPS + kNN + gather; chamfer = the Stage I "
        "loss's two Chamfer distances, forward + backward; transformer = the Transformer blocks "
        "forward + backward (Stage I: the frozen teacher with prompts, input gradients only; "
        "Stage II: student encoder + decoder, plus the teacher's no-grad pass for the targets); "
        "patch embed = mini-PointNet forward + backward (Stage II: plus the teacher's no-grad "
        "one); DGCNN = both DGCNNs of the Stage I model (Stage II: no-grad); decoder = FoldingNet "
        "decoder; other = the rest of the step (loss, heads, codebook, masking, AdamW, ...). "
        "Transformer GFLOP/s is act3d's, against the matmul rate measured in the same rounds.",
        "",
    ]
    for build in ("act3d", "baseline"):
        header = ["stage", "size", f"{build} step ms"] + [f"{label} %" for label in PHASE_LABELS.values()]
        header += ["other %"]
        if build == "act3d":
            header += ["transformer GFLOP/s", "matmul GFLOP/s", "% of matmul"]
        rows = []
        for r in results:
            step = r[f"{build}_step_s"]
            parts = [r.get(f"{build}:{name}_s") for name in PHASE_LABELS]
            row = [r["stage"], r["size"], f"{1e3 * step:.0f}"] + [_pct(p, step) for p in parts]
            row.append(_pct(step - sum(p for p in parts if p is not None), step))
            if build == "act3d":
                tf_rate = r["transformer_flops"] / 1e9 / r["act3d:transformer_s"]
                row += [f"{tf_rate:.1f}", f"{r['matmul_gflops']:.1f}", f"{100 * tf_rate / r['matmul_gflops']:.0f}"]
            rows.append(row)
        lines += [f"**{build}**:", "", _common.markdown_table(header, rows), ""]
    lines += grouping_report(results)
    lines += ["Models:", ""]
    seen = set()
    for r in results:
        for note in r["notes"]:
            if note not in seen:
                seen.add(note)
                lines.append(f"- {note}")
    lines += ["", "Same-step check (loss of the act3d build / the library's own step / the baseline, one seed):", ""]
    lines += [f"- {r['stage']} {r['size']}: {r['check']}" for r in results]
    return "\n".join(lines) + "\n"


def _csv(text: str, valid: tuple[str, ...], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in valid]
    if bad or not items:
        raise SystemExit(f"--{what}: unknown {bad or text!r}; valid choices: {', '.join(valid)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="clouds per step (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per build (median; default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch / numba threads (default 1; see the module docstring)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma list of tiny, small, paper")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma list of stage1, stage2, finetune")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny size, batch 8, 2 repeats")
    parser.add_argument("--bf16", action="store_true",
                        help="also time the act3d step under bf16 autocast (runtime.precision=bf16)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the raw numbers as JSON")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the Markdown report here")
    args = parser.parse_args(argv)
    sizes = _csv(args.sizes, SIZES, "sizes")
    stages = _csv(args.stages, STAGES, "stages")
    if args.quick:
        sizes, args.batch, args.repeats = ["tiny"], min(args.batch, 8), min(args.repeats, 2)
    if args.batch < 2 or args.repeats < 1 or args.threads < 1:
        raise SystemExit("--batch must be >= 2 (batch norm), --repeats and --threads >= 1")
    _common.set_threads(args.threads)
    torch.manual_seed(0)
    tic = time.perf_counter()
    memory = _common.PeakMemory()
    matmul_start = _common.matmul_gflops(MATMUL_N)
    print(f"fp32 matmul: {matmul_start:.1f} GFLOP/s", file=sys.stderr)
    results = []
    for size in sizes:
        for stage in stages:
            start = time.perf_counter()
            workload = WORKLOADS[stage](size, args.batch)
            results.append(measure(workload, args.repeats, memory, args.bf16))
            r = results[-1]
            print(f"{stage} {size}: act3d {r['act3d_samples_per_s']:.2f}/s, baseline "
                  f"{r['baseline_samples_per_s']:.2f}/s ({r['ratio']:.2f}x) "
                  f"[{time.perf_counter() - start:.0f} s]", file=sys.stderr)  # fmt: skip
            del workload
    matmul_end = _common.matmul_gflops(MATMUL_N)
    text = report(results, args, memory, time.perf_counter() - tic, (matmul_start, matmul_end))
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        payload = {"matmul_gflops_start_end": [matmul_start, matmul_end], "args": vars(args), "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
