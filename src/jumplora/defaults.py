"""The paper's hyperparameters (§4.4) that more than one module states: written here once.

The adapter, the gate, the schedule and `RunConfig` take their defaults from these names, so a
changed default changes everywhere at once. Torch-free: the configuration imports it.
"""

RANK = 8  # LoRA rank r
ALPHA = 32.0  # LoRA alpha; the update is scaled by alpha / rank
BANDWIDTH = 0.001  # ε, the JumpReLU kernel's bandwidth
S_START = 0.2  # first interpolation step, as a fraction of the task's optimiser steps
S_FINAL = 0.8  # final interpolation step, likewise
