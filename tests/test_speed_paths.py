"""The speed paths compute what the plain paths compute (issue 16).

- `frozen_weights="compute-dtype"` (compute_dtype.py) holds bf16 copies of the frozen linear weights:
  autocast would have cast them to the same values, so the forward is bit-identical;
- `fold="per-step"` (adapter.py) folds the gated weight once per optimiser step and sums the
  micro-batch gradients in fp32: the gradient of A, B and τ equals the per-micro-batch one up to the
  order of a float sum (fp32 tolerance 1e-5 relative);
- `frozen_masters="disk"` parks the fp32 originals no adapter reads in a temporary file meanwhile and
  reads them back bit for bit.
"""

import json
import math

import pytest
import torch

from jumplora.adapter import LoRALinear
from jumplora.compute_dtype import frozen_weights_in
from jumplora.gate import Threshold
from jumplora.injection import AdapterConfig, inject_adapters
from jumplora.testing import tiny_llama, tiny_t5
from tinyruns import tiny_run

BUILD = {"causal": tiny_llama, "seq2seq": tiny_t5}
TARGETS = {"causal": ("q_proj", "v_proj"), "seq2seq": ("q", "v")}


def _forward(model, kind):
    ids = torch.tensor([[5, 40, 77, 120, 9, 200], [7, 8, 9, 10, 11, 12]])
    if kind == "seq2seq":
        return model(input_ids=ids, decoder_input_ids=torch.tensor([[0, 50, 60], [0, 1, 2]])).logits
    return model(input_ids=ids).logits


def _gated_model(kind):
    """A tiny model with gated adapters whose B is non-zero (so ΔW is), thresholds set, in eval mode."""
    torch.manual_seed(0)
    model = BUILD[kind](seed=0).model
    adapters = inject_adapters(model, AdapterConfig(gated=True, rank=2, target_modules=TARGETS[kind]))
    for layer in adapters.layers.values():
        torch.nn.init.normal_(layer.lora_B, std=0.05)
    adapters.init_thresholds()
    model.eval()
    return model, adapters


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_bf16_copies_give_the_autocast_forward_bit_for_bit(kind, gamma):
    model, adapters = _gated_model(kind)
    adapters.set_gamma(gamma)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _forward(model, kind)
        with frozen_weights_in(model, torch.bfloat16):
            held = _forward(model, kind)
    assert torch.equal(plain, held)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_frozen_weights_come_back_as_they_were_and_embeddings_stay_fp32(kind):
    model = BUILD[kind](seed=0).model
    adapters = inject_adapters(model, AdapterConfig(gated=True, rank=2, target_modules=TARGETS[kind]))
    before = {name: p for name, p in model.named_parameters()}
    values = {name: p.detach().clone() for name, p in before.items()}
    embedding = model.get_input_embeddings()
    with frozen_weights_in(model, torch.bfloat16):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
        assert embedding.weight.dtype == torch.float32  # a tied LM head is untied inside the block only
        assert all(layer.master_weight is not None and layer.master_weight.dtype == torch.float32
                   for layer in adapters.layers.values())
        assert all(layer.lora_A.dtype == torch.float32 for layer in adapters.layers.values())
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)  # the same objects
    assert all(torch.equal(after[k], values[k]) for k in before)
    assert all(layer.master_weight is None for layer in adapters.layers.values())


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_parked_fp32_originals_leave_memory_for_the_block_and_come_back_bit_for_bit(kind):
    model, adapters = _gated_model(kind)
    before = dict(model.named_parameters())
    values = {name: p.detach().clone() for name, p in before.items()}
    lora_bases = {id(layer.base) for layer in adapters.layers.values()}
    plain_linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in lora_bases]
    originals = {id(m): m.weight for m in plain_linears}
    tied = {id(m) for m in plain_linears if m.weight is model.get_input_embeddings().weight}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with frozen_weights_in(model, torch.bfloat16):
            kept = _forward(model, kind)
        with frozen_weights_in(model, torch.bfloat16, park=True):
            parked_sizes = {key: weight.numel() for key, weight in originals.items()}
            masters = [layer.master_weight.numel() for layer in adapters.layers.values()]
            parked = _forward(model, kind)
    assert torch.equal(kept, parked)
    untied = [key for key in originals if key not in tied]
    assert untied and all(parked_sizes[key] == 0 for key in untied)  # their storage was freed
    assert all(parked_sizes[key] > 0 for key in tied)  # the embedding still reads a tied weight
    assert all(n > 0 for n in masters)  # the adapters' bases fold W + β·ΔW from their fp32 originals
    after = dict(model.named_parameters())
    assert all(after[k] is before[k] for k in before)  # the same objects, with their bytes back
    assert all(torch.equal(after[k], values[k]) for k in before)


def test_parking_restores_the_weights_when_the_block_fails():
    model = tiny_llama(seed=0).model
    values = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="inside"):
        with frozen_weights_in(model, torch.bfloat16, park=True):
            raise RuntimeError("inside the block")
    assert all(torch.equal(p, values[name]) for name, p in model.named_parameters())


def _gated_layer(dropout=0.0):
    torch.manual_seed(1)
    base = torch.nn.Linear(24, 16)
    layer = LoRALinear(base, rank=4, alpha=8, mode="jump", threshold=Threshold("global"), dropout=dropout)
    torch.nn.init.normal_(layer.lora_B, std=0.1)
    layer.threshold.set_(float(layer.delta().detach().abs().median()))
    layer.gamma = 0.6
    layer.train()
    return layer


def _gradients(layer, inputs, per_step, dtype=None):
    for p in (layer.lora_A, layer.lora_B, layer.threshold.log_threshold):
        p.grad = None
    if per_step:
        layer.begin_step(dtype)
    for x in inputs:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = layer(x).float().pow(2).mean()
        (loss / len(inputs)).backward()
    if per_step:
        fold, grad = layer.end_step()
        fold.backward(grad)
    return [p.grad.clone() for p in (layer.lora_A, layer.lora_B, layer.threshold.log_threshold)]


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_one_fold_per_step_gives_the_per_micro_batch_gradient(dtype):
    layer = _gated_layer()
    inputs = [torch.randn(3, 5, 24) for _ in range(4)]
    per_micro_batch = _gradients(layer, inputs, per_step=False, dtype=dtype)
    per_step = _gradients(layer, inputs, per_step=True, dtype=dtype)
    # fp32: the same sum in another order; bf16: the same bf16 matmuls, summed in fp32 either way
    for got, want in zip(per_step, per_micro_batch):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), (got - want).abs().max()
    assert layer.end_step() is None  # the step is closed: a forward now folds afresh
    assert layer._step_weight is None


def _losses(run_dir):
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_on_the_speed_paths_equals_the_plain_one(tmp_path, kind, precision):
    # JumpLoRA+ELLA: gated steps (dense, interpolated and sparse) and a loss term sharing ΔW's graph
    runs = {}
    for paths in (("compute-dtype", "per-step"), ("fp32", "per-micro-batch")):
        where = tmp_path / "-".join(paths)
        run_dir, _, _ = tiny_run(where, kind, method="jumplora+ella", precision=precision,
                                 frozen_weights=paths[0], fold=paths[1])
        runs[paths] = run_dir
    fast, plain = runs.values()
    fast_losses, plain_losses = _losses(fast), _losses(plain)
    assert len(fast_losses) == len(plain_losses) > 2
    assert any(r["gamma"] > 0 for r in plain_losses) and any(r.get("ella_penalty") for r in plain_losses)
    for got, want in zip(fast_losses, plain_losses):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), (got["task"], got["step"])
        assert got.get("ella_penalty", 0.0) == pytest.approx(want.get("ella_penalty", 0.0), rel=1e-3, abs=1e-9)
        assert got.get("thresholds") == pytest.approx(want.get("thresholds"), rel=1e-4)
    assert (fast / "accuracy_matrix.csv").read_text() == (plain / "accuracy_matrix.csv").read_text()


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_a_cut_micro_batch_keeps_every_row_and_target_within_the_cap(kind):
    from jumplora.data import get_task
    from jumplora.data.batches import cut_micro_batch, make_train_batches
    from jumplora.data.sources import Example

    loaded = BUILD[kind](seed=0)
    examples = [Example("word " * n, label) for n, label in zip((3, 9, 17, 30, 41, 52), ["World", "Sports"] * 3)]
    (batch,) = make_train_batches(examples, get_task("agnews"), loaded.tokenizer, kind, 6, seed=0,
                                  batching="random", step_batch_size=6)
    width = batch["input_ids"].shape[1]
    pieces = cut_micro_batch(batch, max_tokens=2 * width)
    assert [p["input_ids"].shape[0] for p in pieces] == [2, 2, 2]
    assert all(p["input_ids"].numel() <= 2 * width for p in pieces)
    assert sum(p["target_tokens"] for p in pieces) == batch["target_tokens"]
    for key in ("input_ids", "attention_mask", "labels"):  # the same rows, only trimmed padding
        for i, row in enumerate(torch.cat([torch.nn.functional.pad(p[key], (0, batch[key].shape[1] - p[key].shape[1]),
                                                                   value=-1) for p in pieces])):
            real = row[row != -1]
            assert torch.equal(real, batch[key][i][: len(real)])
    assert pieces[0]["input_ids"].shape[1] < width  # the short rows dropped padding
    assert cut_micro_batch(batch, max_tokens=10**6) == [batch]
    assert len(cut_micro_batch(batch, max_tokens=1)) == 6  # one row at least


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_cut_micro_batches_give_the_same_run(tmp_path, kind):
    runs = {}
    for cap in (None, 40):
        run_dir, _, _ = tiny_run(tmp_path / f"cap-{cap}", kind, method="jumplora+ella", precision="fp32",
                                 max_micro_batch_tokens=cap)
        runs[cap] = run_dir
    whole, cut = _losses(runs[None]), _losses(runs[40])
    assert len(whole) == len(cut) > 2
    for got, want in zip(cut, whole):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), (got["task"], got["step"])
    assert (runs[40] / "accuracy_matrix.csv").read_text() == (runs[None] / "accuracy_matrix.csv").read_text()


@pytest.mark.parametrize("fold", ["per-step", "per-micro-batch"])
def test_a_gated_layer_with_dropout_and_a_loss_term_trains(tmp_path, fold):
    # a gated layer with dropout does not fold: the ΔW its forwards kept is spent after each
    # micro-batch's backward, and ELLA's penalty must build its own
    run_dir, _, _ = tiny_run(tmp_path, "causal", method="jumplora+ella", precision="fp32", lora_dropout=0.1, fold=fold)
    losses = _losses(run_dir)
    assert any(r["gamma"] > 0 and r.get("ella_penalty") for r in losses)


def test_the_token_cap_also_cuts_under_lora_dropout(tmp_path, monkeypatch):
    # IncLoRA trains with dropout 0.1: its widest micro-batches must be bounded by the cap as well
    import jumplora.step

    seen = {}
    real = jumplora.step.task_loss

    def recording(model, batch, kind, reduction="mean"):
        rows, width = batch["input_ids"].shape
        seen.setdefault(run, []).append((rows, rows * width))
        return real(model, batch, kind, reduction)

    monkeypatch.setattr(jumplora.step, "task_loss", recording)
    for run, cap in (("whole", None), ("cut", 40)):
        run_dir, _, _ = tiny_run(tmp_path / run, "causal", method="inclora", precision="fp32", lora_dropout=0.1,
                                 max_micro_batch_tokens=cap)
        assert all(math.isfinite(r["loss"]) for r in _losses(run_dir))
    assert max(tokens for _, tokens in seen["whole"]) > 40  # the cap had something to cut
    assert all(tokens <= 40 or rows == 1 for rows, tokens in seen["cut"])
