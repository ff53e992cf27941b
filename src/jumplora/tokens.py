"""What every layer needs of a tokenizer: the model kinds, the EOS and pad ids, a pad token.

Loading, prompts, batches and evaluation all ask these questions; they ask them here, so the
fallbacks (a tokenizer without a pad token pads with its EOS; a tokenizer without an EOS takes the
model's generation config's) are the same everywhere.
"""

from __future__ import annotations

from typing import Any

from jumplora.errors import ConfigError

KINDS = ("seq2seq", "causal")  # encoder-decoder, decoder-only


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")


def eos_id(tokenizer: Any, model: Any = None) -> int:
    """The tokenizer's EOS id, else (given a model) its generation config's first one."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None and model is not None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
    if eos is None:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__} has no EOS token; targets and generation need one")
    return int(eos)


def pad_id(tokenizer: Any, model: Any = None) -> int:
    """The tokenizer's pad id, else its EOS (GPT-2 has no pad token; padding is masked anyway)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return eos_id(tokenizer, model) if pad is None else int(pad)


def ensure_pad_token(tokenizer: Any) -> None:
    """Give a tokenizer without a pad token its eos (or unk, or bos) token as one, for batching."""
    if tokenizer.pad_token is not None:
        return
    for fallback in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, fallback, None)
        if token is not None:
            tokenizer.pad_token = token
            return
    raise ConfigError("the tokenizer has no pad, eos, unk or bos token to pad batches with")
