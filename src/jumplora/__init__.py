"""JumpLoRA: continual learning with JumpReLU-gated sparse LoRA adapters."""

__version__ = "0.1.0"
