"""Tiny random models for tests and benchmarks: a T5 and a Llama of a few thousand weights.

They build locally (a byte-level tokenizer, random weights from a seed), load in milliseconds and
behave as the real architectures do (T5: seq2seq with a final EOS; the Llama mirrors SmolLM2's
special tokens and chat template), so a whole run takes seconds. Not imported by the package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from jumplora.models import LoadedModel, prepare

TINY_T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids: pad 0, eos 1, unk 2
TINY_LLAMA_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # SmolLM2's: unk 0, bos 1, eos 2
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the byte-level alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)
    ]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def tiny_tokenizer(
    specials: Sequence[str],
    *,
    eos: str,
    pad: str,
    unk: str,
    bos: str | None = None,
    append_eos: bool = False,
    extra_tokens: int = 0,
    chat_template: str | None = None,
    padding_side: str = "right",
):
    """A byte-level tokenizer built locally: ``specials`` first, then the 256 bytes, then
    ``extra_tokens`` added tokens ``<extra_id_N>``. Every text tokenizes (one token a byte)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials)}
    for byte, char in sorted(_bytes_to_unicode().items()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if append_eos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, vocab[eos])]
        )
    backend.add_special_tokens(list(specials))
    extras = [f"<extra_id_{i}>" for i in range(extra_tokens)]
    if extras:
        backend.add_special_tokens(extras)
    kwargs = dict(eos_token=eos, pad_token=pad, unk_token=unk)
    if bos is not None:
        kwargs["bos_token"] = bos
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=512, padding_side=padding_side, **kwargs
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def _tiny_vocab(base: int, vocab_size: int | None) -> int:
    if vocab_size is None:
        return 0
    if vocab_size < base:
        raise ValueError(f"vocab_size must be at least {base} (specials + 256 bytes), got {vocab_size}")
    return vocab_size - base


def _build(model_cls, config, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config)


def tiny_t5(seed: int = 0, vocab_size: int | None = None, **overrides) -> LoadedModel:
    """A tiny random T5 (d_model 32, 2+2 layers, 4 heads) with a byte-level tokenizer.

    ``vocab_size`` (default: specials + 256 bytes = 259) pads the tokenizer with
    ``<extra_id_N>`` tokens so that it always equals ``len(tokenizer)``; ``overrides`` go to the
    ``T5Config``. Dropout is 0 unless overridden. Deterministic given ``seed``; the global RNG is
    left untouched.
    """
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    extra = _tiny_vocab(len(TINY_T5_SPECIALS) + 256, vocab_size)
    tokenizer = tiny_tokenizer(
        TINY_T5_SPECIALS, eos="</s>", pad="<pad>", unk="<unk>", append_eos=True, extra_tokens=extra
    )
    params = dict(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2,
        num_heads=4, dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    params.update(overrides)
    if params["vocab_size"] != len(tokenizer):
        raise ValueError("pass vocab_size as the argument, not as a config override")
    config = T5Config(**params)
    model = _build(T5ForConditionalGeneration, config, seed)
    model.generation_config = GenerationConfig(
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
    )
    prepare(model, tokenizer, "seq2seq")
    return LoadedModel(model, tokenizer, "seq2seq", "tiny-t5", ("q", "v"))


def tiny_llama(seed: int = 0, vocab_size: int | None = None, **overrides) -> LoadedModel:
    """A tiny random Llama (hidden 32, 2 layers, 4 heads, 2 kv heads) with a byte-level tokenizer.

    Its special tokens mirror SmolLM2's: unk ``<|endoftext|>`` 0, bos ``<|im_start|>`` 1, eos
    ``<|im_end|>`` 2, and pad = eos, with the same kind of ChatML chat template; no bos is
    added when tokenizing. ``vocab_size`` and ``overrides`` as for :func:`tiny_t5`.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    extra = _tiny_vocab(len(TINY_LLAMA_SPECIALS) + 256, vocab_size)
    tokenizer = tiny_tokenizer(
        TINY_LLAMA_SPECIALS, bos="<|im_start|>", eos="<|im_end|>", pad="<|im_end|>",
        unk="<|endoftext|>", extra_tokens=extra, chat_template=TINY_CHAT_TEMPLATE, padding_side="left",
    )
    params = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    params.update(overrides)
    if params["vocab_size"] != len(tokenizer):
        raise ValueError("pass vocab_size as the argument, not as a config override")
    config = LlamaConfig(**params)
    model = _build(LlamaForCausalLM, config, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    prepare(model, tokenizer, "causal")
    return LoadedModel(model, tokenizer, "causal", "tiny-llama", ("q_proj", "v_proj"))


def save_tiny(loaded: LoadedModel, folder: str | os.PathLike) -> Path:
    """Save a model and its tokenizer as a folder that :func:`load_model` loads by path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)
    return folder
