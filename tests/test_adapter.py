"""The adapter layer and its model-level injection on tiny random T5 and Llama models."""

import pytest
import torch
from torch import nn

from jumplora.adapter import LoRALinear
from jumplora.gate import Threshold
from jumplora.injection import AdapterConfig, block_of, inject_adapters
from jumplora.testing import tiny_llama, tiny_t5
from jumplora.schedule import JumpSchedule
from jumplora.updates import TaskUpdate

MODELS = {"t5": (tiny_t5, ("q", "v")), "llama": (tiny_llama, ("q_proj", "v_proj"))}


def _inputs(kind, vocab, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 7), generator=gen)
    if kind == "seq2seq":
        return dict(input_ids=ids, decoder_input_ids=torch.randint(3, vocab, (2, 4), generator=gen))
    return dict(input_ids=ids)


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _randomise(adapters, seed=0, scale=0.2):
    """Give B non-zero values, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapters.layers.values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * scale)


@pytest.fixture(params=list(MODELS))
def setup(request):
    build, targets = MODELS[request.param]
    loaded = build(seed=0)
    return loaded, targets


def test_defaults_and_initialisation():
    base = nn.Linear(16, 12)
    layer = LoRALinear(base)
    assert layer.rank == 8 and layer.scale == 32 / 8
    assert layer.lora_A.shape == (8, 16) and layer.lora_B.shape == (12, 8)
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / 16 ** 0.5  # kaiming_uniform(a=√5) on fan_in 16
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4
    assert not base.weight.requires_grad


@pytest.mark.parametrize("gated", [False, True])
def test_zero_B_leaves_model_output_unchanged(setup, gated):
    loaded, targets = setup
    inputs = _inputs(loaded.kind, loaded.model.config.vocab_size)
    before = _logits(loaded.model, inputs)
    adapters = inject_adapters(loaded.model, AdapterConfig(target_modules=targets, gated=gated))
    assert len(adapters.layers) > 0
    torch.testing.assert_close(_logits(loaded.model, inputs), before, rtol=0, atol=0)


def _explicit(layer, x):
    """x·(W + β·ΔW_interp)ᵀ + b written out with the explicit gate ΔW ⊙ H(|ΔW| − τ)."""
    delta = layer.lora_B.detach() @ layer.lora_A.detach()
    if layer.mode == "jump":
        jump = delta * (delta.abs() > layer.threshold.value.detach())
        delta = layer.gamma * jump + (1 - layer.gamma) * delta
    weight = layer.base.weight + layer.scale * delta
    return x @ weight.T + layer.base.bias


@pytest.mark.parametrize("mode,gamma", [("lora", 0.0), ("jump", 0.0), ("jump", 0.3), ("jump", 1.0)])
def test_each_mode_matches_explicit_formula(mode, gamma):
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(24, 20), mode=mode, threshold=Threshold("global") if mode == "jump" else None)
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.3)
    if mode == "jump":
        layer.threshold.set_(float(layer.delta().detach().abs().median()))
    layer.gamma = gamma
    x = torch.randn(5, 3, 24)
    torch.testing.assert_close(layer(x), _explicit(layer, x), rtol=1e-5, atol=1e-5)
    if mode == "jump" and gamma == 1.0:  # sparse mode really zeroes entries
        assert (layer.current_update("jump") == 0).float().mean() > 0.3


def test_sparse_mode_gradients_reach_A_B_and_threshold():
    torch.manual_seed(0)
    threshold = Threshold("global")
    layer = LoRALinear(nn.Linear(24, 20), mode="jump", threshold=threshold, bandwidth=0.05)
    with torch.no_grad():
        layer.lora_B.normal_(0, 0.3)
    threshold.set_(float(layer.delta().detach().abs().median()))
    layer.gamma = 1.0
    layer(torch.randn(4, 24)).pow(2).sum().backward()
    assert layer.lora_A.grad.abs().sum() > 0 and layer.lora_B.grad.abs().sum() > 0
    assert threshold.log_threshold.grad is not None and threshold.log_threshold.grad != 0


def test_block_of():
    assert block_of("encoder.block.3.layer.0.SelfAttention.q") == "encoder.block.3"
    assert block_of("decoder.block.3.layer.1.EncDecAttention.v") == "decoder.block.3"
    assert block_of("model.layers.12.self_attn.q_proj") == "model.layers.12"
    assert block_of("lm_head") == "lm_head"


@pytest.mark.parametrize("mode", ["global", "local"])
def test_threshold_initialisation_count_is_exact(setup, mode):
    loaded, targets = setup
    adapters = inject_adapters(loaded.model, AdapterConfig(target_modules=targets, gated=True, threshold_mode=mode, rank=2,
                                                           threshold_init="midpoint"))
    _randomise(adapters)
    taus = adapters.init_thresholds()
    groups = adapters.groups()
    if mode == "global":
        assert list(groups) == ["global"]
    else:
        blocks = {block_of(name) for name in adapters.layers}
        assert set(groups) == blocks and len(blocks) > 1
        if loaded.kind == "seq2seq":  # encoder block i and decoder block i are separate blocks
            assert "encoder.block.0" in groups and "decoder.block.0" in groups
    for group, layers in groups.items():
        budget = sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in layers)
        above = sum(int((layer.delta().abs() > taus[group]).sum()) for layer in layers)
        total = sum(layer.delta().numel() for layer in layers)
        assert above == min(budget, total), group
        assert layers[0].threshold.initialized


def test_threshold_groups_are_shared_instances(setup):
    loaded, targets = setup
    adapters = inject_adapters(loaded.model, AdapterConfig(target_modules=targets, gated=True, threshold_mode="global"))
    thresholds = {id(layer.threshold) for layer in adapters.layers.values()}
    assert len(thresholds) == 1
    n_params = len(adapters.parameters())
    assert n_params == 2 * len(adapters.layers) + 1


@pytest.mark.parametrize("gated", [True, False])
def test_merge_equals_sparse_adapter_and_removal_restores(setup, gated, tmp_path):
    loaded, targets = setup
    model = loaded.model
    inputs = _inputs(loaded.kind, model.config.vocab_size, seed=1)
    original = {n: p.detach().clone() for n, p in model.state_dict().items()}
    adapters = inject_adapters(model, AdapterConfig(target_modules=targets, gated=gated, rank=2, threshold_init="midpoint"))
    budget = sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in adapters.layers.values())
    entries = sum(layer.base.weight.numel() for layer in adapters.layers.values())
    _randomise(adapters, scale=0.05)
    if gated:
        adapters.init_thresholds()
        adapters.set_gamma(1.0)
    with_adapter = _logits(model, inputs)
    update = adapters.merge_and_remove(task="demo")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    merged = _logits(model, inputs)
    # float32 fold of W + β·ΔW_final vs the same sum computed inside the adapter: same order
    torch.testing.assert_close(merged, with_adapter, rtol=1e-5, atol=1e-5)
    assert merged.sub(_logits_with(original, model, inputs)).abs().max() > 1e-4  # the update did something
    if gated:
        # τ was just initialised: exactly #params(A, B) entries survive the hard threshold
        assert update.sparsity() == pytest.approx(1 - budget / entries)
    else:
        assert update.sparsity() == 0.0
    # the stored update round-trips and removes the task from the merged model
    update.save(tmp_path / "demo.safetensors")
    reloaded = TaskUpdate.load(tmp_path / "demo.safetensors")
    assert set(reloaded.modules) == set(update.modules)
    reloaded.remove_from(model)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, original[name], rtol=0, atol=1e-6)


def _logits_with(state, model, inputs):
    current = {n: p.detach().clone() for n, p in model.state_dict().items()}
    model.load_state_dict(state)
    out = _logits(model, inputs)
    model.load_state_dict(current)
    return out


def test_schedule_gamma_and_short_tasks():
    schedule = JumpSchedule.for_task(100, 0.2, 0.8)
    assert (schedule.start, schedule.final) == (20, 80)
    # a fraction becomes a step as the authors' int(): floor by default, round as an option
    assert (JumpSchedule.for_task(44, 0.2, 0.8).start, JumpSchedule.for_task(44, 0.2, 0.8).final) == (8, 35)
    rounded = JumpSchedule.for_task(44, 0.2, 0.8, rounding="round")
    assert (rounded.start, rounded.final) == (9, 35)
    assert schedule.gamma(0) == 0 and schedule.gamma(19) == 0 and schedule.gamma(20) == 0
    assert schedule.gamma(50) == pytest.approx(0.5) and schedule.gamma(80) == 1 and schedule.gamma(99) == 1
    assert schedule.initializes_threshold(20) and not schedule.initializes_threshold(21)
    absolute = JumpSchedule.for_task(100, 10, 30)
    assert (absolute.start, absolute.final) == (10, 30)
    # CB has 4 steps at batch 32: τ set after one dense step, γ reaches 1 on the last step
    cb = JumpSchedule.for_task(4, 0.2, 0.8)
    assert (cb.start, cb.final) == (1, 3) and cb.reaches_start
    assert [cb.gamma(s) for s in range(4)] == [0.0, 0.0, 0.5, 1.0]
    # a one-step task never reaches S_start (ΔW = 0 at step 0): τ is set after its last step
    one = JumpSchedule.for_task(1, 0.2, 0.8)
    assert one.start == 1 and not one.reaches_start
    with pytest.raises(ValueError, match="S_start"):
        JumpSchedule.for_task(10, 1.5, 0.8)
