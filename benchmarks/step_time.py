#!/usr/bin/env python
"""Time one optimiser step of JumpLoRA against plain LoRA and stock PEFT LoRA.

One step = forward + backward + AdamW step + zero_grad, on the same model and the same batch,
for five variants built from deep copies of one loaded base model:

    jump_dense    JumpLoRA, γ = 0 (low-rank path, thresholds initialised but unused)
    jump_interp   JumpLoRA, γ = 0.5 (τ initialised; folded weight W + β·ΔW_interp)
    jump_sparse   JumpLoRA, γ = 1 (τ initialised; folded weight W + β·ΔW_jump)
    lora          plain LoRA through jumplora (`gated=False`)
    peft          stock PEFT LoRA (`peft.get_peft_model`, lora_dropout = 0)

All variants get r = 8, α = 32 on the same target modules, and identical A and B (A Kaiming-
uniform-like, B ~ N(0, 0.01), seeded by module name) so that ΔW ≠ 0 and the gate is realistic.
Timing: warm-up steps for every (precision, variant), then R rounds; each round times one step
of every (precision, variant) in turn, with the order rotated every round, so background load
falls on all of them alike. Reported: median, p25/p75 per variant, the ratio of each median to
the PEFT and to the plain-LoRA median, and the median of the per-round paired ratios.

    python benchmarks/step_time.py                         # SmolLM2-135M, fp32 and bf16
    python benchmarks/step_time.py --model tiny --rounds 3 # quick functional run
    python benchmarks/step_time.py --model t5-large-random --device cuda --seq-len 512
    python benchmarks/step_time.py --profile 3             # + torch.profiler breakdown
    python benchmarks/step_time.py --micro                 # + one-layer micro-benchmark

`--micro` times one adapted q and v layer at the model's shapes: frozen linear, low-rank LoRA,
the fold without gate, the current sparse path, and a sampled-∂W' backward
(torch.sparse.sampled_addmm). (An earlier `--lean-gate` variant timed the gate that
jumplora.gate now implements; see step_time.md.) `--rounds 0` with
`--profile`/`--micro` skips the step timing. Torch threads are left at torch's default unless
`--threads` is given; either way they are printed and recorded. The seq2seq loss (T5) uses
random decoder labels of `--label-len` tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import json
import platform
import shlex
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from jumplora.gate import symmetric_jumprelu  # noqa: E402
from jumplora.injection import AdapterConfig, inject_adapters  # noqa: E402

VARIANTS = {
    "jump_dense": "JumpLoRA dense (γ=0)",
    "jump_interp": "JumpLoRA interp (γ=0.5)",
    "jump_sparse": "JumpLoRA sparse (γ=1)",
    "lora": "LoRA (jumplora, gated=False)",
    "peft": "PEFT LoRA",
}
DEFAULT_VARIANTS = ("jump_dense", "jump_interp", "jump_sparse", "lora", "peft")
GAMMAS = {"jump_dense": 0.0, "jump_interp": 0.5, "jump_sparse": 1.0}
TARGET_RATIO = 1.15  # sparse step ≤ 1.15 × PEFT step


# --------------------------------------------------------------------------------------------
# Model and batch
# --------------------------------------------------------------------------------------------


@dataclass
class Base:
    model: nn.Module
    kind: str  # "causal" or "seq2seq"
    name: str
    targets: tuple[str, ...]
    vocab: int


def t5_large_random(seed: int) -> nn.Module:
    """A randomly initialised T5-large (v1 shapes), built locally: no download."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=32128, d_model=1024, d_ff=4096, d_kv=64, num_layers=24, num_decoder_layers=24,
        num_heads=16, feed_forward_proj="relu", dropout_rate=0.1, tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_base(name: str, seed: int) -> Base:
    from jumplora import models, testing

    if name == "tiny":
        loaded = testing.tiny_llama(seed=seed)
    elif name == "tiny-t5":
        loaded = testing.tiny_t5(seed=seed)
    elif name == "t5-large-random":
        model = t5_large_random(seed)
        return Base(model, "seq2seq", name, ("q", "v"), model.config.vocab_size)
    else:
        loaded = models.load_model(name)
    model = loaded.model
    vocab = model.get_input_embeddings().num_embeddings
    return Base(model, loaded.kind, loaded.name, tuple(loaded.target_modules), vocab)


def make_batch(base: Base, batch_size: int, seq_len: int, label_len: int, device, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    # avoid the first few ids (special tokens: pad/eos/unk) so no label is ignored by accident
    low = min(3, base.vocab - 1)
    input_ids = torch.randint(low, base.vocab, (batch_size, seq_len), generator=gen)
    if base.kind == "seq2seq":
        labels = torch.randint(low, base.vocab, (batch_size, label_len), generator=gen)
    else:
        labels = input_ids.clone()
    return {"input_ids": input_ids.to(device), "labels": labels.to(device)}


# --------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------


@dataclass
class Variant:
    key: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    adapters: object = None  # jumplora AdapterSet (None for PEFT)
    info: dict = field(default_factory=dict)


def _init_lora_pair(name: str, A: torch.Tensor, B: torch.Tensor, seed: int) -> None:
    """Same A and B for a module of the same name in every variant."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    bound = 1.0 / (A.shape[1] ** 0.5)  # what kaiming_uniform_(a=√5) gives for an (r, in) matrix
    a = (torch.rand(A.shape, generator=gen) * 2 - 1) * bound
    b = torch.randn(B.shape, generator=gen) * 0.01
    with torch.no_grad():
        A.copy_(a.to(A.device, A.dtype))
        B.copy_(b.to(B.device, B.dtype))


def build_variant(key: str, base: Base, args, device) -> Variant:
    model = copy.deepcopy(base.model)
    info: dict = {}
    if key == "peft":
        from peft import LoraConfig, get_peft_model
        from peft.tuners.lora import LoraLayer

        config = LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=list(base.targets), lora_dropout=0.0)
        model = get_peft_model(model, config)
        n = 0
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                plain = name.removeprefix("base_model.model.")
                _init_lora_pair(plain, module.lora_A["default"].weight, module.lora_B["default"].weight, args.seed)
                n += 1
        info["adapted_modules"] = n
        params = [p for p in model.parameters() if p.requires_grad]
        adapters = None
    else:
        gated = key != "lora"
        adapters = inject_adapters(
            model,
            AdapterConfig(target_modules=base.targets, rank=args.rank, alpha=args.alpha, gated=gated,
                          threshold_mode="global"),
        )
        for name, layer in adapters.layers.items():
            _init_lora_pair(name, layer.lora_A, layer.lora_B, args.seed)
        if gated:
            info["tau"] = adapters.init_thresholds()
            adapters.set_gamma(GAMMAS[key])
            info["gamma"] = GAMMAS[key]
            info["sparsity_at_init"] = adapters.sparsity()
        info["adapted_modules"] = len(adapters.layers)
        params = adapters.parameters()
    model.to(device)
    model.train()
    info["trainable_params"] = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=args.lr)
    return Variant(key, model, optimizer, adapters, info)


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


def autocast_for(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(v: Variant, batch: dict, precision: str, device: torch.device) -> tuple[float, float, float, float]:
    """One optimiser step; returns (total, forward, backward, optimiser) seconds and the loss."""
    _sync(device)
    t0 = time.perf_counter()
    with autocast_for(precision, device):
        loss = v.model(**batch).loss
    _sync(device)
    t1 = time.perf_counter()
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    v.optimizer.step()
    v.optimizer.zero_grad(set_to_none=True)
    _sync(device)
    t3 = time.perf_counter()
    if not torch.isfinite(loss.detach()):
        raise RuntimeError(f"{v.key} ({precision}): non-finite loss {loss.item()}")
    return t3 - t0, t1 - t0, t2 - t1, t3 - t2


@torch.no_grad()
def initial_losses(variants: list[Variant], batch: dict) -> dict[str, float]:
    """fp32 loss of every variant before any step: lora, peft and jump_dense must agree."""
    out = {}
    for v in variants:
        v.model.eval()
        out[v.key] = v.model(**batch).loss.item()
        v.model.train()
    return out


# --------------------------------------------------------------------------------------------
# Statistics and reporting
# --------------------------------------------------------------------------------------------


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarise(samples: dict, keys: list[str]) -> dict:
    """samples[key] = list of (total, fwd, bwd, opt) per round."""
    out = {}
    for key in keys:
        tot = [s[0] for s in samples[key]]
        out[key] = {
            "label": VARIANTS[key],
            "n": len(tot),
            "median_s": statistics.median(tot),
            "p25_s": quantile(tot, 0.25),
            "p75_s": quantile(tot, 0.75),
            "iqr_s": quantile(tot, 0.75) - quantile(tot, 0.25),
            "min_s": min(tot),
            "mean_s": statistics.fmean(tot),
            "forward_median_s": statistics.median(s[1] for s in samples[key]),
            "backward_median_s": statistics.median(s[2] for s in samples[key]),
            "optimizer_median_s": statistics.median(s[3] for s in samples[key]),
            "samples_s": tot,
        }
    for ref in ("peft", "lora"):
        if ref not in out:
            continue
        for key in keys:
            out[key][f"ratio_vs_{ref}"] = out[key]["median_s"] / out[ref]["median_s"]
            paired = [a[0] / b[0] for a, b in zip(samples[key], samples[ref])]
            out[key][f"paired_ratio_vs_{ref}_median"] = statistics.median(paired)
            out[key][f"paired_ratio_vs_{ref}_p25"] = quantile(paired, 0.25)
            out[key][f"paired_ratio_vs_{ref}_p75"] = quantile(paired, 0.75)
    return out


def markdown_table(stats: dict, keys: list[str]) -> str:
    has_peft, has_lora = "peft" in stats, "lora" in stats
    head = ["variant", "median s", "p25 s", "p75 s", "IQR s"]
    if has_peft:
        head += ["× PEFT (medians)", "× PEFT (paired, p25–p75)"]
    if has_lora:
        head += ["× LoRA (medians)"]
    head += ["fwd s", "bwd s", "opt s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for key in keys:
        s = stats[key]
        row = [s["label"], f"{s['median_s']:.3f}", f"{s['p25_s']:.3f}", f"{s['p75_s']:.3f}", f"{s['iqr_s']:.3f}"]
        if has_peft:
            row += [f"{s['ratio_vs_peft']:.3f}",
                    f"{s['paired_ratio_vs_peft_median']:.3f} ({s['paired_ratio_vs_peft_p25']:.3f}–"
                    f"{s['paired_ratio_vs_peft_p75']:.3f})"]
        if has_lora:
            row += [f"{s['ratio_vs_lora']:.3f}"]
        row += [f"{s['forward_median_s']:.3f}", f"{s['backward_median_s']:.3f}", f"{s['optimizer_median_s']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict:
    import peft
    import transformers

    env = {
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "python": platform.python_version(), "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(), "cpu_model": cpu_model(),
        "cpu_count": __import__("os").cpu_count(), "device": str(device),
    }
    try:
        env["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return env


# --------------------------------------------------------------------------------------------
# Profiler
# --------------------------------------------------------------------------------------------


def _op_table(prof, time_attr: str) -> dict[str, dict]:
    ops: dict[str, dict] = {}
    for evt in prof.key_averages(group_by_input_shape=True):
        t = getattr(evt, time_attr, 0) or 0
        if t <= 0:
            continue
        name = f"{evt.key} {evt.input_shapes}" if evt.input_shapes else evt.key
        entry = ops.setdefault(name, {"self_ms": 0.0, "calls": 0})
        entry["self_ms"] += t / 1000.0
        entry["calls"] += evt.count
    return ops


def profile_variants(variants: list[Variant], batch, precisions, device, steps: int, top: int) -> dict:
    """Per-op self time of one step for each variant, grouped by op name and input shapes.

    `steps` single-step profiles per (precision, variant), taken round-robin like the timing
    (order rotated each round); each op's time is the median over those profiles (0 where it did
    not occur), so a burst of background load in one profile does not decide the table. Also the
    op-level difference of each variant to PEFT."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    time_attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    configs = [(p, v) for p in precisions for v in variants]
    tables: dict[tuple[str, str], list[dict]] = {(p, v.key): [] for p, v in configs}
    for r in range(steps):
        shift = r % len(configs)
        for p, v in configs[shift:] + configs[:shift]:
            with profile(activities=activities, record_shapes=True) as prof:
                step(v, batch, p, device)
            tables[(p, v.key)].append(_op_table(prof, time_attr))
    result: dict = {}
    for precision in precisions:
        per_variant: dict[str, dict[str, dict]] = {}
        for v in variants:
            runs = tables[(precision, v.key)]
            names = set().union(*runs)
            per_variant[v.key] = {
                n: {"self_ms": statistics.median(t.get(n, {"self_ms": 0.0})["self_ms"] for t in runs),
                    "calls": max(t.get(n, {"calls": 0})["calls"] for t in runs)}
                for n in names
            }
        summary = {}
        ref = per_variant.get("peft")
        for key, ops in per_variant.items():
            total = sum(o["self_ms"] for o in ops.values())
            ranked = sorted(ops.items(), key=lambda kv: -kv[1]["self_ms"])[:top]
            entry = {"total_self_ms": total, "top": [{"op": k, **o} for k, o in ranked]}
            if ref is not None and key != "peft":
                diffs = []
                for n in set(ops) | set(ref):
                    a = ops.get(n, {"self_ms": 0.0, "calls": 0})
                    b = ref.get(n, {"self_ms": 0.0, "calls": 0})
                    diffs.append({"op": n, "delta_ms": a["self_ms"] - b["self_ms"], "ms": a["self_ms"],
                                  "peft_ms": b["self_ms"], "calls": a["calls"], "peft_calls": b["calls"]})
                diffs.sort(key=lambda d: -abs(d["delta_ms"]))
                entry["delta_total_ms_vs_peft"] = total - sum(o["self_ms"] for o in ref.values())
                entry["top_deltas_vs_peft"] = diffs[:top]
                only = [d for d in diffs if d["peft_calls"] == 0 and d["ms"] > 0]
                entry["ops_absent_from_peft_ms"] = sum(d["ms"] for d in only)
                entry["ops_absent_from_peft"] = sorted(only, key=lambda d: -d["ms"])[:top]
            summary[key] = entry
        result[precision] = summary
    return result


def print_profile(prof: dict) -> None:
    for precision, summary in prof.items():
        for key, entry in summary.items():
            print(f"\n### profile {precision} / {VARIANTS[key]}: {entry['total_self_ms']:.1f} ms self time per step")
            if "top_deltas_vs_peft" in entry:
                print(f"vs PEFT: {entry['delta_total_ms_vs_peft']:+.1f} ms; largest op differences:")
                for d in entry["top_deltas_vs_peft"]:
                    print(f"  {d['delta_ms']:+9.2f} ms  ({d['ms']:8.2f} vs {d['peft_ms']:8.2f}; calls "
                          f"{d['calls']} vs {d['peft_calls']})  {d['op']}")
                print(f"ops PEFT does not run at all: {entry['ops_absent_from_peft_ms']:.1f} ms; largest:")
                for d in entry["ops_absent_from_peft"]:
                    print(f"  {d['ms']:9.2f} ms  calls {d['calls']:5d}  {d['op']}")
            else:
                for o in entry["top"]:
                    print(f"  {o['self_ms']:9.2f} ms  calls {o['calls']:5d}  {o['op']}")


# --------------------------------------------------------------------------------------------
# Micro-benchmark of one adapted layer
# --------------------------------------------------------------------------------------------


class _SampledGradLinear(torch.autograd.Function):
    """y = x·(W + β·Δ_jump)ᵀ whose backward computes ∂L/∂W' only where the gate or the threshold's
    kernel band can use it (sampled dense-dense matmul), not the dense (out × in) product.

    Only valid for γ = 1 (sparse mode): there the gradient w.r.t. ΔW is zero off the gate and
    the threshold's pseudo-gradient reads only the band entries.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, delta, threshold, scale, bandwidth):
        magnitude = delta.abs()
        gate = magnitude > threshold
        in_band = (magnitude - threshold).abs() < bandwidth / 2
        jump = delta * gate
        folded = weight + (scale * jump).to(weight.dtype)
        y = F.linear(x, folded.to(x.dtype), None if bias is None else bias.to(x.dtype))
        need = (gate | in_band).to_sparse_csr()
        ctx.save_for_backward(x, folded, delta, threshold, gate, in_band)
        ctx.need = need
        ctx.scale, ctx.bandwidth = scale, bandwidth
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, folded, delta, threshold, gate, in_band = ctx.saved_tensors
        grad_x = grad_y @ folded.to(grad_y.dtype)
        gy = grad_y.reshape(-1, grad_y.shape[-1])
        xx = x.reshape(-1, x.shape[-1])
        mask = ctx.need
        # values of (gyᵀ·x) at the needed positions: same pattern as `mask`, CSR
        # sampled_addmm has no bfloat16 kernel on CPU: the sampled product runs in float32
        sampled = torch.sparse.sampled_addmm(
            mask.to(torch.float32), gy.t().float().contiguous(), xx.float().contiguous(), beta=0.0, alpha=1.0
        )
        grad_w = sampled.to_dense().to(delta.dtype) * ctx.scale
        grad_delta = grad_w * gate
        pseudo = torch.where(in_band, delta.sign(), torch.zeros_like(delta))
        grad_tau = (-(threshold / ctx.bandwidth) * (grad_w * pseudo).sum()).reshape(threshold.shape)
        return grad_x, None, None, grad_delta, grad_tau, None, None


def _time_interleaved(fns: dict, reps: int, device) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin (order rotated every round)."""
    labels = list(fns)
    for _ in range(2):
        for label in labels:
            fns[label]()
    ts: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(reps):
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            _sync(device)
            t0 = time.perf_counter()
            fns[label]()
            _sync(device)
            ts[label].append(time.perf_counter() - t0)
    return {label: statistics.median(ts[label]) for label in labels}


def micro_benchmark(variants: list[Variant], batch_size: int, seq_len: int, precisions, device, reps: int) -> dict:
    """Forward + backward of one adapted layer (first q and first v of the sparse model) at the
    model's shapes, for: low-rank LoRA (PEFT-style), the current sparse path (fold + dense
    ∂L/∂W'), its pieces, and an alternative backward that samples ∂L/∂W' only at needed entries."""
    sparse = next((v for v in variants if v.key == "jump_sparse"), None)
    if sparse is None:
        return {}
    layers = list(sparse.adapters.layers.items())
    picked = {}
    for name, layer in layers:
        suffix = name.rsplit(".", 1)[-1]
        picked.setdefault(suffix, (name, layer))
    tokens = batch_size * seq_len
    out: dict = {}
    for precision in precisions:
        for suffix, (name, layer) in picked.items():
            x0 = torch.randn(tokens, layer.in_features, device=device)
            W = layer.base.weight
            A = layer.lora_A.detach().clone().requires_grad_(True)
            B = layer.lora_B.detach().clone().requires_grad_(True)
            log_tau = layer.threshold.log_threshold.detach().clone().requires_grad_(True)
            s, bw = layer.scale, layer.bandwidth
            gy = torch.randn(tokens, layer.out_features, device=device)

            def run(body):
                def fn():
                    x = x0.clone().requires_grad_(True)
                    with autocast_for(precision, device):
                        y = body(x)
                    y.backward(gy.to(y.dtype))
                    A.grad = B.grad = log_tau.grad = None
                return fn

            def base_only(x):
                return F.linear(x, W)

            def lowrank(x):
                return F.linear(x, W) + s * F.linear(F.linear(x, A), B)

            def fold_current(x):
                with torch.autocast(device_type=device.type, enabled=False):
                    delta = B @ A
                    jump = symmetric_jumprelu(delta, log_tau.exp(), bw)
                    w = W + (s * jump).to(W.dtype)
                return F.linear(x, w)

            def fold_no_gate(x):  # the fold + dense ∂L/∂W' without the gate's element-wise work
                with torch.autocast(device_type=device.type, enabled=False):
                    w = W + s * (B @ A)
                return F.linear(x, w)

            def sampled(x):
                with torch.autocast(device_type=device.type, enabled=False):
                    delta = B @ A
                tau = log_tau.exp()
                xin = x.to(torch.bfloat16) if precision == "bf16" else x
                return _SampledGradLinear.apply(xin, W, None, delta, tau, s, bw)

            bodies = {"base linear only (frozen)": base_only, "low-rank LoRA (PEFT-style)": lowrank,
                      "fold, no gate": fold_no_gate, "fold + gate (current sparse)": fold_current,
                      "fold + sampled ∂W' (alternative)": sampled}
            # the alternative must give the same gradients as the current path
            check = {}
            for label, body in (("current", fold_current), ("sampled", sampled)):
                x = x0.clone().requires_grad_(True)
                with autocast_for(precision, device):
                    y = body(x)
                y.backward(gy.to(y.dtype))
                check[label] = (y.detach().float(), x.grad.float(), A.grad.clone(), B.grad.clone(), log_tau.grad.clone())
                A.grad = B.grad = log_tau.grad = None
            err = {n: float((a - b).abs().max() / (b.abs().max() + 1e-30))
                   for n, a, b in zip(("y", "dx", "dA", "dB", "dtau"), check["sampled"], check["current"])}
            res = _time_interleaved({label: run(body) for label, body in bodies.items()}, reps, device)
            with torch.no_grad():
                delta = B @ A
                tau = log_tau.exp()
                density = float(((delta.abs() > tau) | ((delta.abs() - tau).abs() < bw / 2)).float().mean())
            out[f"{precision}/{suffix} {tuple(W.shape)} x{tokens}"] = {
                "median_s": res, "needed_density": density, "max_rel_err_sampled_vs_current": err,
            }
    return out


def _fmt_err(err: dict) -> str:
    return "{" + ", ".join(f"{k} {v:.1e}" for k, v in err.items()) + "}"


def print_micro(micro: dict) -> None:
    for key, entry in micro.items():
        print(f"\n### micro {key}: needed-entry density {entry['needed_density']:.4f}; "
              f"max rel err vs current: sampled {_fmt_err(entry['max_rel_err_sampled_vs_current'])}")
        ref = entry["median_s"]["low-rank LoRA (PEFT-style)"]
        for label, t in entry["median_s"].items():
            print(f"  {t * 1e3:9.3f} ms  ({t / ref:5.2f}× low-rank)  {label}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="tiny | tiny-t5 | t5-large-random | smollm2-135m-instruct | a model folder or HF id")
    p.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--label-len", type=int, default=None, help="decoder label length (seq2seq; default: --seq-len)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) (default: leave torch's default, printed)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after timing, profile STEPS steps of each variant with torch.profiler")
    p.add_argument("--profile-top", type=int, default=12)
    p.add_argument("--micro", action="store_true", help="after timing, micro-benchmark one adapted layer")
    p.add_argument("--micro-reps", type=int, default=15)
    p.add_argument("--out", default=str(Path("benchmarks") / "step_time.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if args.rounds < 1 and not (args.profile or args.micro):
        raise SystemExit("--rounds must be at least 1 (0 only with --profile or --micro)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment(device)
    env["threads_set_by_flag"] = args.threads
    print(f"torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}; "
          f"torch threads {env['torch_num_threads']} (interop {env['torch_num_interop_threads']}); "
          f"{env['cpu_model']} ({env['cpu_count']} CPUs); device {device}", flush=True)

    t_load = time.perf_counter()
    base = load_base(args.model, args.seed)
    label_len = args.label_len or args.seq_len
    batch = make_batch(base, args.batch_size, args.seq_len, label_len, device, args.seed)
    base.model.to(device)
    variants = [build_variant(k, base, args, device) for k in keys]
    del base.model
    gc.collect()
    print(f"model {base.name} ({base.kind}), targets {base.targets}, vocab {base.vocab}; "
          f"batch {args.batch_size}×{args.seq_len}" + (f" → {label_len}" if base.kind == "seq2seq" else "")
          + f"; built {len(variants)} variants in {time.perf_counter() - t_load:.1f} s", flush=True)
    for v in variants:
        print(f"  {v.key:12s} {v.info}", flush=True)

    losses = initial_losses(variants, batch)
    print("initial fp32 losses:", {k: round(x, 6) for k, x in losses.items()}, flush=True)
    same = [k for k in ("jump_dense", "lora", "peft") if k in losses]
    if len(same) > 1:
        spread = max(losses[k] for k in same) - min(losses[k] for k in same)
        print(f"  spread of {same} (must be ~0): {spread:.2e}", flush=True)

    configs = [(p, v) for p in precisions for v in variants]
    t_warm = time.perf_counter()
    for _ in range(args.warmup):
        for p, v in configs:
            step(v, batch, p, device)
    print(f"warm-up: {args.warmup} step(s) each in {time.perf_counter() - t_warm:.1f} s", flush=True)

    samples = {p: {v.key: [] for v in variants} for p in precisions}
    t_run = time.perf_counter()
    for r in range(args.rounds):
        gc.collect()
        gc.disable()
        try:
            shift = r % len(configs)
            for p, v in configs[shift:] + configs[:shift]:
                samples[p][v.key].append(step(v, batch, p, device))
        finally:
            gc.enable()
        done = ", ".join(f"{p}/{k}={samples[p][k][-1][0]:.3f}" for p in precisions for k in keys)
        print(f"round {r + 1}/{args.rounds}: {done}", flush=True)
    print(f"timed {args.rounds} rounds in {time.perf_counter() - t_run:.1f} s", flush=True)

    stats = {p: summarise(samples[p], keys) for p in precisions} if args.rounds else {}
    for v in variants:
        if v.adapters is not None and v.adapters.thresholds:
            v.info["sparsity_at_end"] = v.adapters.sparsity()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"\ncommand: {command}")
    verdict = {}
    for p in stats:
        print(f"\n## {p} — median of {args.rounds} interleaved rounds (seconds per optimiser step)\n")
        print(markdown_table(stats[p], keys))
        if "jump_sparse" in stats[p] and "peft" in stats[p]:
            ratio = stats[p]["jump_sparse"]["ratio_vs_peft"]
            paired = stats[p]["jump_sparse"]["paired_ratio_vs_peft_median"]
            ok = ratio <= TARGET_RATIO
            verdict[p] = {"sparse_vs_peft": ratio, "paired": paired, "target": TARGET_RATIO, "meets_target": ok}
            print(f"\nsparse / PEFT = {ratio:.3f} (paired median {paired:.3f}): "
                  f"{'meets' if ok else 'MISSES'} the ≤ {TARGET_RATIO}× target")

    prof = profile_variants(variants, batch, precisions, device, args.profile, args.profile_top) if args.profile else None
    if prof:
        print_profile(prof)
    micro = micro_benchmark(variants, args.batch_size, args.seq_len, precisions, device, args.micro_reps) if args.micro else None
    if micro:
        print_micro(micro)

    env["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    record = {
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "settings": {
            "model": base.name, "kind": base.kind, "targets": list(base.targets), "rank": args.rank,
            "alpha": args.alpha, "batch_size": args.batch_size, "seq_len": args.seq_len,
            "label_len": label_len if base.kind == "seq2seq" else None, "precisions": precisions,
            "rounds": args.rounds, "warmup": args.warmup, "lr": args.lr, "seed": args.seed,
            "step": "forward (autocast for bf16) + backward + AdamW.step + zero_grad(set_to_none=True)",
            "interleaving": "round-robin over (precision, variant), order rotated by one every round",
        },
        "variants": {v.key: {"label": VARIANTS[v.key], **v.info} for v in variants},
        "initial_fp32_loss": losses,
        "results": stats,
        "verdict": verdict,
    }
    if prof:
        record["profile"] = prof
    if micro:
        record["micro"] = micro
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
