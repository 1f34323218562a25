"""The training steps of ``train_throughput.py`` on a GPU: samples/s and peak memory.

The prepared device check of issue #9: Stage I, Stage II and fine-tuning at a size
(default ``paper``), the act3d build only (the same workloads, weights and batches as
``benchmarks/train_throughput.py``), in fp32 and under bf16 autocast (what
``runtime.precision=auto`` trains with on a GPU). Peak memory is
``torch.cuda.max_memory_allocated`` over one step after a warm-up step (which also creates
the AdamW state). Runs on CPU too (``--device cpu``: no memory column), which is how it is
tested without a GPU.

    python benchmarks/gpu_steps.py [--device cuda] [--sizes paper] [--batch 32] [--repeats 20]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import train_throughput as tt  # noqa: E402


def to_device(w: tt.Workload, device: torch.device) -> None:
    """Move a workload's modules and tensors to ``device`` (the optimizer keeps its
    parameters: ``Module.to`` moves them in place)."""
    for name, value in vars(w).items():
        if isinstance(value, nn.Module):
            value.to(device)
        elif isinstance(value, Tensor):
            setattr(w, name, value.to(device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(w: tt.Workload, impl: tt.Impl, device: torch.device, repeats: int) -> dict[str, float]:
    """Median step time and (CUDA) peak memory of one step of ``w`` built as ``impl``."""
    tt._configure(w, impl)
    for _ in range(2):  # warm-up: kernels, autotuning, the AdamW state
        w.step(impl)
    _sync(device)
    peak = float("nan")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        w.step(impl)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        w.step(impl)
        _sync(device)
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"step_s": step, "samples_per_s": w.batch / step, "peak_bytes": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--sizes", default="paper", help="comma list of tiny, small, paper")
    parser.add_argument("--stages", default=",".join(tt.STAGES), help="comma list of stage1, stage2, finetune")
    parser.add_argument("--batch", type=int, default=32, help="clouds per step (default 32)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps (median; default 20)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the Markdown report here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch; use --device cpu to try the script")
    sizes = tt._csv(args.sizes, tt.SIZES, "sizes")
    stages = tt._csv(args.stages, tt.STAGES, "stages")
    if args.batch < 2 or args.repeats < 1:
        raise SystemExit("--batch must be >= 2 (batch norm) and --repeats >= 1")
    torch.manual_seed(0)
    fp32 = dataclasses.replace(tt.ACT3D, device_type=device.type)
    bf16 = dataclasses.replace(fp32, name="act3d_bf16", bf16=True)
    tic = time.perf_counter()
    rows = []
    for size in sizes:
        for stage in stages:
            w = tt.WORKLOADS[stage](size, args.batch)
            to_device(w, device)
            r32, r16 = measure(w, fp32, device, args.repeats), measure(w, bf16, device, args.repeats)
            rows.append([stage, size, f"{r32['samples_per_s']:.1f}", f"{r16['samples_per_s']:.1f}",
                         f"{r32['step_s'] / r16['step_s']:.2f}x",
                         _fmt_peak(r32["peak_bytes"]), _fmt_peak(r16["peak_bytes"])])  # fmt: skip
            print(f"{stage} {size}: fp32 {r32['samples_per_s']:.1f}/s, bf16 {r16['samples_per_s']:.1f}/s",
                  file=sys.stderr)  # fmt: skip
            del w
            if device.type == "cuda":
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _common.cpu_model()
    lines = [f"### Training steps on {name}", ""]
    lines += _common.machine_lines(torch.get_num_threads())
    lines += [
        f"- device: {device} ({name}); command: `{_common.command_line()}` "
        f"(wall time {(time.perf_counter() - tic) / 60:.1f} min)",
        f"- batch {args.batch}; median of {args.repeats} steps after two warm-up steps; peak = "
        "max_memory_allocated during one step minus the memory allocated before it",
        "",
        _common.markdown_table(
            ["stage", "size", "fp32 samples/s", "bf16 samples/s", "bf16 / fp32", "fp32 peak MiB", "bf16 peak MiB"],
            rows,
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


def _fmt_peak(nbytes: float) -> str:
    return "–" if math.isnan(nbytes) else _common.fmt_mb(nbytes)


if __name__ == "__main__":
    raise SystemExit(main())
