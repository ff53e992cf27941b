"""A fixed-ratio sparse mask, as in LoRI (Zhang et al., 2025), for comparison with JumpLoRA.

A stays at its random initialisation (a frozen projection). B trains dense for a calibration
phase (until S_start); then the `lori_sparsity` quantile of |B| over all adapted matrices gives a
threshold, and B is masked to the entries above it for the rest of the task. Unlike JumpLoRA the
sparsity ratio is fixed in advance and the mask sits on B, not on ΔW.
"""

from __future__ import annotations

import torch

from jumplora.methods.base import Method, TaskContext, register


@register("lori")
class LoRI(Method):
    def __init__(self, config):
        super().__init__(config)
        self.masks: dict[str, torch.Tensor] = {}

    def before_task(self, ctx: TaskContext) -> None:
        self.masks = {}
        for layer in ctx.adapters.layers.values():
            layer.lora_A.requires_grad_(False)

    @torch.no_grad()
    def on_step(self, ctx: TaskContext) -> None:
        layers = ctx.adapters.layers
        if ctx.step == ctx.schedule.start and not self.masks:
            magnitudes = torch.cat([layer.lora_B.abs().flatten() for layer in layers.values()])
            keep = max(1, round((1.0 - self.config.lori_sparsity) * magnitudes.numel()))
            threshold = torch.topk(magnitudes, keep).values[-1]
            self.masks = {name: layer.lora_B.abs() >= threshold for name, layer in layers.items()}
        for name, mask in self.masks.items():
            layers[name].lora_B.mul_(mask)  # re-applied each step: Adam's moments would revive entries

    def after_task(self, ctx: TaskContext, update) -> None:
        self.masks = {}
