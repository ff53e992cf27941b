"""Model-level JumpLoRA: inject adapters, group thresholds, initialise τ, merge and remove.

`inject_adapters` wraps every target `nn.Linear` of a model in a `LoRALinear` and returns an
`AdapterSet`, the handle the training loop uses for the rest of the task:

    adapters = inject_adapters(model, AdapterConfig(gated=True, threshold_mode="local"))
    ...                                  # train; at S_start: adapters.init_thresholds()
    adapters.set_gamma(schedule.gamma(step))
    update = adapters.merge_and_remove() # β·ΔW_final into the base weights, adapters gone
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from jumplora import defaults
from jumplora.adapter import LoRALinear
from jumplora.gate import DEFAULT_BANDWIDTH, MIN_THRESHOLD, Threshold
from jumplora.targets import find_target_linears
from jumplora.updates import ModuleUpdate, TaskUpdate

THRESHOLD_MODES = ("global", "local")
THRESHOLD_INITS = ("authors", "midpoint")
AUTHORS_MIN_THRESHOLD = 1e-12  # the authors clamp τ at S_start to this before taking its log


@dataclass(frozen=True)
class AdapterConfig:
    """What to inject for one task. Defaults are the paper's (§4.4)."""

    target_modules: tuple[str, ...] = ("q", "v")
    rank: int = defaults.RANK
    alpha: float = defaults.ALPHA
    gated: bool = False  # True: JumpLoRA; False: plain LoRA
    threshold_mode: str = "global"  # one τ for the model, or one per transformer block
    bandwidth: float = DEFAULT_BANDWIDTH
    threshold_grad: str = "authors"  # the threshold's pseudo-gradient form (gate.py)
    threshold_init: str = "authors"  # how τ is set at S_start (AdapterSet.init_thresholds)
    dropout: float = 0.0  # LoRA dropout on the low-rank path's input, training only

    def __post_init__(self):
        if self.threshold_init not in THRESHOLD_INITS:
            raise ValueError(f"unknown threshold init {self.threshold_init!r}; expected one of {THRESHOLD_INITS}")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"unknown threshold mode {self.threshold_mode!r}; expected one of {THRESHOLD_MODES}")
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")


_BLOCK = re.compile(r"^(.*?\.\d+)(?:\.|$)")


def block_of(module_name: str) -> str:
    """The transformer block a module belongs to: its path up to the first numeric component.

    ``encoder.block.3.layer.0.SelfAttention.q`` → ``encoder.block.3`` (T5's encoder and decoder
    block i are different blocks); ``model.layers.5.self_attn.q_proj`` → ``model.layers.5``.
    A module outside any numbered block is its own block.
    """
    match = _BLOCK.match(module_name)
    return match.group(1) if match else module_name


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class AdapterSet:
    """The adapters of the current task, their thresholds, and the operations of Algorithm 1."""

    def __init__(self, model: nn.Module, config: AdapterConfig, layers: dict[str, LoRALinear], thresholds: dict[str, Threshold]):
        self.model = model
        self.config = config
        self.layers = layers
        self.thresholds = thresholds

    # -- training ---------------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: every A and B, then each threshold once."""
        params = [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]
        return params + [t.log_threshold for t in self.thresholds.values()]

    def set_gamma(self, gamma: float) -> None:
        for layer in self.layers.values():
            layer.gamma = float(gamma)

    def begin_step(self, dtype: torch.dtype | None) -> None:
        """Fold each gated layer's weight once for this optimiser step (adapter.py, `begin_step`)."""
        for layer in self.layers.values():
            if layer.folds_per_step:
                layer.begin_step(dtype)

    def finish_step(self, loss_terms: torch.Tensor | None = None) -> None:
        """One backward from the step's folded weights (their summed gradients) and from the method's
        loss terms into A, B and τ: their graphs share ΔW, so they go back together."""
        tensors, grads = [], []
        for layer in self.layers.values():
            pair = layer.end_step()
            if pair is not None:
                tensors.append(pair[0])
                grads.append(pair[1])
        if loss_terms is not None and loss_terms.requires_grad:
            tensors.append(loss_terms)
            grads.append(torch.ones_like(loss_terms))
        if tensors:
            torch.autograd.backward(tensors, grads)
        self.forget_step_updates()

    def forget_step_updates(self) -> None:
        for layer in self.layers.values():
            layer.forget_step_updates()

    @property
    def gamma(self) -> float:
        return next(iter(self.layers.values())).gamma if self.layers else 0.0

    def groups(self) -> dict[str, list[LoRALinear]]:
        by_group: dict[str, list[LoRALinear]] = {}
        for layer in self.layers.values():
            if layer.threshold is not None:
                by_group.setdefault(layer.threshold.group, []).append(layer)
        return by_group

    @torch.no_grad()
    def init_thresholds(self) -> dict[str, float]:
        """Set each group's τ so that #(|ΔW| > τ) over the group ≈ #params of its A and B (= k).

        ``threshold_init="authors"`` (their code): τ is an order statistic of the N magnitudes,
        the (N−k+1)-th smallest for a global threshold (k − 1 entries stay above it) and the
        (N−k)-th smallest per block (k stay), clamped at 1e-12.
        ``"midpoint"``: τ halfway between the k-th and (k+1)-th largest magnitudes, so exactly k
        stay up to ties; a group with no more entries than k keeps every entry.
        """
        values = {}
        for group, layers in self.groups().items():
            budget = sum(layer.lora_A.numel() + layer.lora_B.numel() for layer in layers)
            magnitudes = torch.cat([layer.delta().abs().flatten() for layer in layers])
            if self.config.threshold_init == "authors":
                below = magnitudes.numel() - budget  # entries to zero
                rank = below + 1 if self.config.threshold_mode == "global" else below
                rank = min(max(rank, 1), magnitudes.numel())
                tau = torch.kthvalue(magnitudes, rank).values.clamp_min(AUTHORS_MIN_THRESHOLD)
            elif budget >= magnitudes.numel():
                smallest = magnitudes.min().item()
                tau = max(smallest / 2, MIN_THRESHOLD)
            else:
                top = torch.topk(magnitudes, budget + 1, sorted=True).values
                tau = 0.5 * (top[budget - 1].item() + top[budget].item())
                tau = max(tau, MIN_THRESHOLD)  # fewer than k non-zero entries: keep the non-zeros
            layers[0].threshold.set_(tau)
            values[group] = float(tau)
        return values

    @torch.no_grad()
    def sparsity(self) -> float:
        """Fraction of adapted entries the gate zeroes now (0 before τ is initialised)."""
        total = zeroed = 0
        for layer in self.layers.values():
            final = layer.final_update()
            total += final.numel()
            zeroed += int((final == 0).sum())
        return zeroed / max(total, 1)

    # -- end of task --------------------------------------------------------------------------
    @torch.no_grad()
    def merge_and_remove(self, task: str = "") -> TaskUpdate:
        """Merge β·ΔW_final into the base weights (lines 19-20), drop the adapters (line 22)."""
        update = TaskUpdate(task=task, thresholds={g: t.value.item() for g, t in self.thresholds.items()})
        for name, layer in self.layers.items():
            weight = layer.base.weight
            shape = tuple(weight.shape)
            if layer.mode == "jump":
                merged = layer.scale * layer.final_update()
                indices = merged.flatten().nonzero().squeeze(1)
                values = merged.flatten()[indices]
                module_update = ModuleUpdate(
                    shape=shape, indices=indices.cpu(), values=values.float().cpu(), scale=layer.scale
                )
            else:
                module_update = ModuleUpdate(
                    shape=shape, lora_A=layer.lora_A.detach().float().cpu().clone(),
                    lora_B=layer.lora_B.detach().float().cpu().clone(), scale=layer.scale,
                )
            update.modules[name] = module_update
            _set_submodule(self.model, name, layer.base)
        update.apply(self.model)
        self.layers = {}
        self.thresholds = {}
        return update

    def remove(self) -> None:
        """Drop the adapters without merging (abandoning the task)."""
        for name, layer in self.layers.items():
            _set_submodule(self.model, name, layer.base)
        self.layers, self.thresholds = {}, {}


def inject_adapters(model: nn.Module, config: AdapterConfig) -> AdapterSet:
    """Wrap every target linear of `model` in a fresh `LoRALinear` (A Kaiming-uniform, B = 0)."""
    names = list(find_target_linears(model, config.target_modules))  # names each unmatched target
    thresholds: dict[str, Threshold] = {}
    layers: dict[str, LoRALinear] = {}
    for name in names:
        base = model.get_submodule(name)
        threshold = None
        if config.gated:
            group = "global" if config.threshold_mode == "global" else block_of(name)
            if group not in thresholds:
                thresholds[group] = Threshold(group).to(base.weight.device)
            threshold = thresholds[group]
        layer = LoRALinear(
            base, rank=config.rank, alpha=config.alpha, mode="jump" if config.gated else "lora",
            threshold=threshold, bandwidth=config.bandwidth, threshold_grad=config.threshold_grad,
            dropout=config.dropout,
        )
        _set_submodule(model, name, layer)
        layers[name] = layer
    return AdapterSet(model, config, layers, thresholds)
