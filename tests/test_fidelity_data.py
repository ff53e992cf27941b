"""The data pipeline as the JumpLoRA authors' implementation has it: their prompt, truncation of
the whole prompt, target caps, their train / dev / test split used as given, unlabelled test
records kept, and optimiser steps drawn uniformly at random (each a length-sorted set of
micro-batches).

Tokenizers are tiny ones trained here (no hub): a T5-like Unigram that appends EOS, a byte-level
BPE without specials (GPT-2-like) and the same with a BOS (Llama-like).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from jumplora.data import (
    TASKS,
    DataProtocol,
    Example,
    encode_prompt,
    encode_target,
    format_prompt,
    get_task,
    label_token_ids,
    load_task,
    make_eval_batches,
    make_train_batches,
    shuffle_steps,
)
from jumplora.errors import ConfigError
from tokenizers_for_tests import byte_bpe, t5_like as t5_like_tokenizer

DEV_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "CL_Benchmark_dev"

CORPUS = [format_prompt(spec, f"Title: A cat sat on mat {i}.\nText: sentence 1: the dog ran.",
                        prompt_style="authors") + " " + label
          for spec in TASKS.values() for label in spec.labels for i in range(3)]


@pytest.fixture(scope="module")
def t5_like():
    return t5_like_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def gpt2_like():
    return byte_bpe(CORPUS, bos=False)


@pytest.fixture(scope="module")
def llama_like():
    return byte_bpe(CORPUS, bos=True)


@pytest.fixture(scope="module")
def dev_dir() -> Path:
    if not (DEV_DIR / "instruction_config.json").is_file():
        pytest.fail(f"the authors' split not found at {DEV_DIR}")
    return DEV_DIR


# --------------------------------------------------------------------------- prompt text

AGNEWS_S = ("Task Instruction: What is the topic of the following paragraph? Choose one from the "
            "option.\n\nOptions: World | Sports | Business | Science or Technology\nText: S\n"
            "Answer:")
COPA_FIRST_TEST = ("Task Instruction: \nOptions: A | B\nText: Which sentence is the cause of "
                   "\"Everyone in the class turned to stare at the student.\"? Choose one between A "
                   "and B.\nA: The student's phone rang.\nB: The student took notes.\nAnswer:")


def test_authors_prompt_text(dev_dir):
    agnews = load_task("agnews", dev_dir, DataProtocol(split="auto"))
    assert format_prompt(agnews, "S", prompt_style="authors") == AGNEWS_S
    assert format_prompt(get_task("agnews"), "S", prompt_style="authors") == AGNEWS_S
    # no task name, and the header flag is an olora option only
    assert format_prompt(agnews, "S", header=True, prompt_style="authors") == AGNEWS_S
    copa = load_task("copa", dev_dir, DataProtocol(split="auto"))
    assert copa.instruction is None
    assert format_prompt(copa, copa.test[0].sentence, prompt_style="authors") == COPA_FIRST_TEST
    with pytest.raises(ConfigError, match="unknown prompt style"):
        format_prompt(copa, "S", prompt_style="o-lora")


def test_authors_prompt_tokens_causal_and_seq2seq(dev_dir, gpt2_like, llama_like, t5_like):
    copa = load_task("copa", dev_dir, DataProtocol(split="auto"))
    sentence = copa.test[0].sentence
    # causal: the whole string, no special tokens (not even the Llama-like BOS)
    for tok in (gpt2_like, llama_like):
        ids = encode_prompt(tok, copa, sentence, kind="causal", prompt_style="authors")
        assert ids == tok(COPA_FIRST_TEST, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == COPA_FIRST_TEST
    # seq2seq: the tokenizer's own encoding, final EOS included
    ids = encode_prompt(t5_like, copa, sentence, kind="seq2seq", prompt_style="authors")
    assert ids == t5_like(COPA_FIRST_TEST)["input_ids"] and ids[-1] == t5_like.eos_token_id


def test_causal_training_text_is_prompt_space_label(dev_dir, gpt2_like):
    agnews = load_task("agnews", dev_dir, DataProtocol(split="auto", train_per_class=2))
    batches = make_train_batches(agnews.train, agnews, gpt2_like, "causal", batch_size=8, seed=0,
                                 prompt_style="authors", max_input_tokens=None)
    texts = {}
    for example in agnews.train:
        text = format_prompt(agnews, example.sentence, prompt_style="authors") + " " + example.label
        texts[tuple(gpt2_like(text, add_special_tokens=False)["input_ids"])] = example
    seen = 0
    for batch in batches:
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            n = int(mask.sum())
            assert ids[n - 1] == gpt2_like.eos_token_id  # jumplora's target ends with EOS
            assert tuple(ids[: n - 1].tolist()) in texts
            example = texts[tuple(ids[: n - 1].tolist())]
            target = labels[labels != -100].tolist()
            assert gpt2_like.decode(target) == f" {example.label}<|endoftext|>"
            seen += 1
    assert seen == len(agnews.train) == 8


# --------------------------------------------------------------------------- truncation

LONG = "Title: " + " ".join(f"cat {i} sat on the mat." for i in range(80)) + "\nText: the dog ran."


@pytest.mark.parametrize("limit", [1, 2, 5, 17, 40, 120, 512, None])
def test_authors_seq2seq_truncation_is_hf_truncation(t5_like, limit):
    spec = get_task("agnews")
    prompt = format_prompt(spec, LONG, prompt_style="authors")
    expected = (t5_like(prompt)["input_ids"] if limit is None
                else t5_like(prompt, truncation=True, max_length=limit)["input_ids"])
    if limit == 1:  # only the EOS would fit: refused rather than an empty prompt
        with pytest.raises(ConfigError, match="max_input_tokens=1 leaves no room"):
            encode_prompt(t5_like, spec, LONG, limit, kind="seq2seq", prompt_style="authors")
        return
    ids = encode_prompt(t5_like, spec, LONG, limit, kind="seq2seq", prompt_style="authors")
    assert ids == expected
    assert ids[-1] == t5_like.eos_token_id
    if limit is not None and limit < 200:
        assert len(ids) == limit
        assert "Answer:" not in t5_like.decode(ids)  # the end of the prompt is what goes


@pytest.mark.parametrize("tokenizer_name", ["gpt2_like", "llama_like"])
def test_authors_causal_truncation_keeps_the_first_ids(request, tokenizer_name):
    tok = request.getfixturevalue(tokenizer_name)
    spec = get_task("agnews")
    prompt = format_prompt(spec, LONG, prompt_style="authors")
    full = tok(prompt, add_special_tokens=False)["input_ids"]
    assert len(full) > 60
    for limit in (1, 60):
        cut = encode_prompt(tok, spec, LONG, limit, kind="causal", prompt_style="authors")
        assert cut == full[:limit]
        assert cut == tok(prompt, add_special_tokens=False, truncation=True,
                          max_length=limit)["input_ids"]


def test_olora_style_still_cuts_the_sentence_only(t5_like):
    spec = get_task("agnews")
    cut = encode_prompt(t5_like, spec, LONG, 150, kind="seq2seq")
    assert len(cut) == 150 and t5_like.decode(cut, skip_special_tokens=True).endswith("Answer:")


@pytest.mark.parametrize("label", ["Science or Technology", "very negative", "A"])
@pytest.mark.parametrize("limit", [1, 2, 3, 8, None])
def test_seq2seq_target_cap_is_hf_text_target_truncation(t5_like, label, limit):
    ids = encode_target(t5_like, label, "seq2seq", limit)
    kwargs = {} if limit is None else {"truncation": True, "max_length": limit}
    assert ids == t5_like(text_target=label, **kwargs)["input_ids"]
    assert ids[-1] == t5_like.eos_token_id


def test_causal_target_cap_keeps_eos_last(gpt2_like):
    full = encode_target(gpt2_like, "Science or Technology", "causal")
    assert len(full) > 3
    for limit in (1, 2, 3):
        ids = encode_target(gpt2_like, "Science or Technology", "causal", limit)
        assert ids == full[: limit - 1] + [gpt2_like.eos_token_id]
    assert encode_target(gpt2_like, "Science or Technology", "causal", 8) == full
    with pytest.raises(ConfigError, match="max_target_tokens"):
        encode_target(gpt2_like, "A", "causal", 0)
    spec = get_task("agnews")
    assert label_token_ids(spec, gpt2_like, "causal", 2) == [
        encode_target(gpt2_like, label, "causal", 2) for label in spec.labels]


def test_eval_batches_authors_style(gpt2_like, t5_like):
    spec = get_task("agnews")
    examples = [Example(f"Title: cat {'sat ' * (i % 7)}\nText: {i}", "World") for i in range(11)]
    for tok, kind in ((gpt2_like, "causal"), (t5_like, "seq2seq")):
        batches = make_eval_batches(examples, spec, tok, kind, 4, 12, prompt_style="authors")
        lengths = []
        for batch in batches:
            for i, ids, mask in zip(batch["index"], batch["input_ids"], batch["attention_mask"]):
                assert ids[mask.bool()].tolist() == encode_prompt(
                    tok, spec, examples[i].sentence, 12, kind=kind, prompt_style="authors")
                lengths.append(int(mask.sum()))
        assert lengths == sorted(lengths, reverse=True)  # longest first over the whole set
        assert sorted(i for b in batches for i in b["index"]) == list(range(11))


# --------------------------------------------------------------------------- the given split

CB_LABELS = ["entailment", "contradiction", "neutral"]
INSTRUCTIONS = {"NLI": [{"instruction_type": "zero-shot", "instruction": "Relate them.\n"}]}


def _records(prefix: str, labels: list[str]) -> list[dict]:
    return [{"sentence": f"{prefix} {i}", "label": label} for i, label in enumerate(labels)]


def _dev_folder(root: Path, *, dev=True, test_labels=None) -> dict[str, list[dict]]:
    files = {
        "train": _records("train", ["neutral", "entailment", "entailment", "contradiction",
                                    "entailment", "neutral", "entailment", "maybe",
                                    "contradiction", "entailment"]),
        "dev": _records("dev", ["contradiction", "entailment", "neutral", "entailment"]),
        "test": _records("test", test_labels or ["entailment", "-", "neutral", "contradiction",
                                                 "-", "entailment", "-", "entailment"]),
    }
    folder = root / "NLI" / "CB"
    folder.mkdir(parents=True, exist_ok=True)
    for split, records in files.items():
        if split != "dev" or dev:
            (folder / f"{split}.json").write_text(json.dumps(records))
    (folder / "labels.json").write_text(json.dumps(CB_LABELS))
    (root / "instruction_config.json").write_text(json.dumps(INSTRUCTIONS))
    return files


def _as_examples(records, keep=lambda r: True):
    return [Example(r["sentence"], r["label"]) for r in records if keep(r)]


def test_dev_json_split_is_used_as_given(tmp_path):
    files = _dev_folder(tmp_path)
    data = load_task("cb", tmp_path, DataProtocol(split="auto", unlabelled_test="drop"))
    assert data.train == _as_examples(files["train"], lambda r: r["label"] != "maybe")
    assert data.validation == _as_examples(files["dev"])
    assert data.test == _as_examples(files["test"], lambda r: r["label"] != "-")
    folder = tmp_path / "NLI" / "CB"
    assert data.sources == {"train": str(folder / "train.json"),
                            "validation": str(folder / "dev.json"),
                            "test": str(folder / "test.json")}
    assert data.dropped == {"train": 1, "validation": 0, "test": 3}
    assert data.unlabelled == 0
    assert data.instruction == "Relate them.\n"
    # the same folder under the protocol: validation drawn from train.json, nothing from dev.json
    protocol = load_task("cb", tmp_path, DataProtocol(split="protocol", test_per_class=None))
    assert protocol.sources["validation"] == str(folder / "train.json")
    assert set(protocol.train) | set(protocol.validation) == set(data.train)
    assert not set(protocol.validation) & set(data.validation)


def test_without_dev_json_auto_is_the_protocol(tmp_path):
    _dev_folder(tmp_path, dev=False)
    auto = load_task("cb", tmp_path, DataProtocol(split="auto", seed=3))
    protocol = load_task("cb", tmp_path, DataProtocol(split="protocol", seed=3))
    assert (auto.train, auto.validation, auto.test) == (
        protocol.train, protocol.validation, protocol.test)
    assert auto.sources == protocol.sources


def test_caps_cut_the_given_split_stratified_seeded_in_file_order(tmp_path):
    labels = ["entailment"] * 9 + ["contradiction"] * 4 + ["neutral"] * 2
    random.Random(0).shuffle(labels)
    folder = tmp_path / "NLI" / "CB"
    _dev_folder(tmp_path)
    (folder / "train.json").write_text(json.dumps(_records("train", labels)))
    everything = _as_examples(_records("train", labels))

    def train(cap, seed=42):
        return load_task("cb", tmp_path, DataProtocol(split="auto", seed=seed,
                                                      train_per_class=cap)).train

    three = train(3)
    assert Counter(e.label for e in three) == {"entailment": 3, "contradiction": 3, "neutral": 2}
    assert three == [e for e in everything if e in three]  # file order
    assert train(3) == three  # seeded
    assert any(train(3, seed) != three for seed in range(43, 50))
    assert set(train(2)) <= set(three) <= set(train(5))  # a smaller cap keeps a subset
    assert train(None) == everything
    # the caps of validation and test cut their own files
    data = load_task("cb", tmp_path, DataProtocol(split="auto", val_per_class=1, test_per_class=1,
                                                  unlabelled_test="drop"))
    assert Counter(e.label for e in data.validation) == {l: 1 for l in CB_LABELS}
    assert Counter(e.label for e in data.test) == {l: 1 for l in CB_LABELS}


def test_count_wrong_keeps_unlabelled_test_records(tmp_path, caplog):
    files = _dev_folder(tmp_path)
    data = load_task("cb", tmp_path, DataProtocol(split="auto", unlabelled_test="count-wrong"))
    assert data.test == _as_examples(files["test"])  # the '-' records included, in file order
    assert data.unlabelled == 3 and data.dropped == {"train": 1, "validation": 0, "test": 0}
    assert "keeping 3 of 8 records" in caplog.text
    assert data.label_counts("test") == {"entailment": 3, "contradiction": 1, "neutral": 1}
    # capped as a class of its own
    capped = load_task("cb", tmp_path, DataProtocol(split="auto", test_per_class=2,
                                                    unlabelled_test="count-wrong"))
    assert Counter(e.label for e in capped.test) == {"entailment": 2, "-": 2, "neutral": 1,
                                                     "contradiction": 1}
    assert capped.unlabelled == 2
    # train records outside the label set are still dropped
    assert all(e.label != "maybe" for e in capped.train)
    # and under the protocol too
    protocol = load_task("cb", tmp_path, DataProtocol(split="protocol",
                                                      unlabelled_test="count-wrong"))
    assert Counter(protocol.test) == Counter(data.test) and protocol.unlabelled == 3
    dropped = load_task("cb", tmp_path, DataProtocol(split="protocol"))
    assert Counter(dropped.test) == Counter(e for e in data.test if e.label != "-")
    assert dropped.dropped == {"train": 1, "test": 3} and dropped.unlabelled == 0


def test_authors_split_on_disk(dev_dir):
    mnli = load_task("mnli", dev_dir, DataProtocol(split="auto", unlabelled_test="count-wrong"))
    assert mnli.counts() == {"train": 2400, "validation": 600, "test": 1631}
    assert mnli.unlabelled == 131 and sum(e.label == "-" for e in mnli.test) == 131
    first = json.loads((dev_dir / "NLI" / "MNLI" / "test.json").read_text())[0]
    assert mnli.test[0] == Example(first["sentence"], first["label"])
    assert mnli.sources["validation"].endswith("NLI/MNLI/dev.json")


# --------------------------------------------------------------------------- batches

EXAMPLES = [Example(f"sentence 1: {'the cat ' * (1 + (7 * i) % 11)}\nsentence 2: cat {i}.",
                    CB_LABELS[i % 3]) for i in range(30)]


def _key(row_ids, row_mask) -> tuple:
    return tuple(row_ids[row_mask.bool()].tolist())


def _steps(batches) -> list[list]:
    """The example keys of each optimiser step, grouped by the "step" key."""
    steps: dict[int, list] = {}
    for batch in batches:
        steps.setdefault(batch["step"], []).extend(
            _key(i, m) for i, m in zip(batch["input_ids"], batch["attention_mask"]))
    return [steps[k] for k in sorted(steps)]


@pytest.mark.parametrize("tokenizer_name, kind", [("gpt2_like", "causal"), ("t5_like", "seq2seq")])
def test_random_batching_steps(request, tokenizer_name, kind):
    tok = request.getfixturevalue(tokenizer_name)
    spec = get_task("CB")

    def make(micro, seed=1, step=8):
        return make_train_batches(EXAMPLES, spec, tok, kind, micro, seed, batching="random",
                                  step_batch_size=step, prompt_style="authors")

    batches = make(4)
    # 30 examples, 8 a step: 3 full steps of two micro-batches and a partial one (4 + 2)
    assert [b["step"] for b in batches] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [len(b["input_ids"]) for b in batches] == [4, 4, 4, 4, 4, 4, 4, 2]
    steps = _steps(batches)
    assert [len(s) for s in steps] == [8, 8, 8, 6]
    assert Counter(k for s in steps for k in s) == Counter(
        tuple(encode_prompt(tok, spec, e.sentence, kind=kind, prompt_style="authors")
              + (encode_target(tok, e.label, kind) if kind == "causal" else []))
        for e in EXAMPLES)
    # within a step the micro-batches are sorted by length
    for first, second in zip(batches[::2], batches[1::2]):
        assert int(first["attention_mask"].sum(1).max()) <= int(second["attention_mask"].sum(1).min())
    # a step's examples are a set fixed by the seed (and the step size), not by the micro size
    as_sets = lambda bs: [Counter(s) for s in _steps(bs)]
    assert as_sets(make(2)) == as_sets(make(8)) == as_sets(batches)
    assert [b["step"] for b in make(2)] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 3
    assert as_sets(make(4, seed=1)) == as_sets(batches)
    assert as_sets(make(4, seed=2)) != as_sets(batches)
    # one micro-batch a step by default
    single = make_train_batches(EXAMPLES, spec, tok, kind, 4, 1, batching="random")
    assert [b["step"] for b in single] == list(range(8))
    with pytest.raises(ConfigError, match="not a positive multiple"):
        make(4, step=6)
    with pytest.raises(ConfigError, match="unknown batching"):
        make_train_batches(EXAMPLES, spec, tok, kind, 4, 1, batching="sorted")


def test_random_steps_are_not_length_sorted(gpt2_like):
    """The length mode's steps are correlated by length; the random mode's are uniform draws."""
    spec = get_task("CB")
    examples = EXAMPLES * 8  # 240 examples, 30 steps of 8
    spreads = []
    for batching in ("random", "length"):
        batches = make_train_batches(examples, spec, gpt2_like, "causal", 4, 0, batching=batching,
                                     step_batch_size=8)
        per_step: dict[int, list[int]] = {}
        for b in batches:
            per_step.setdefault(b["step"], []).extend(b["attention_mask"].sum(1).tolist())
        spreads.append(sum(max(v) - min(v) for v in per_step.values()) / len(per_step))
    assert spreads[0] > 2 * spreads[1]


def test_length_batching_is_unchanged_and_numbers_steps(gpt2_like):
    spec = get_task("CB")
    before = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", 3, 1)
    grouped = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", 3, 1, batching="length",
                                 step_batch_size=6)
    assert [b["input_ids"].tolist() for b in before] == [b["input_ids"].tolist() for b in grouped]
    assert [b["step"] for b in before] == list(range(10))
    assert [b["step"] for b in grouped] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("tokenizer_name, kind", [("gpt2_like", "causal"), ("t5_like", "seq2seq")])
def test_target_tokens(request, tokenizer_name, kind):
    tok = request.getfixturevalue(tokenizer_name)
    spec = get_task("CB")
    batches = make_train_batches(EXAMPLES, spec, tok, kind, 4, 0, batching="random",
                                 step_batch_size=8, max_target_tokens=2, prompt_style="authors")
    lengths = {label: len(encode_target(tok, label, kind, 2)) for label in CB_LABELS}
    assert all(n == 2 for n in lengths.values())  # cut to 2 (EOS last)
    total = 0
    for batch in batches:
        assert isinstance(batch["target_tokens"], int) and isinstance(batch["step"], int)
        assert batch["target_tokens"] == int((batch["labels"] != -100).sum())
        assert batch["target_tokens"] == 2 * len(batch["input_ids"])
        total += batch["target_tokens"]
    assert total == sum(lengths[e.label] for e in EXAMPLES)
    # the extra keys survive a move to a device as plain ints
    moved = {k: v.to("cpu") if hasattr(v, "to") else v for k, v in batches[0].items()}
    assert moved["step"] == batches[0]["step"] and moved["target_tokens"] == batches[0]["target_tokens"]


def test_shuffle_steps_keeps_steps_whole(gpt2_like):
    spec = get_task("CB")
    a = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", 2, 0, batching="random",
                           step_batch_size=4)
    b = make_train_batches(EXAMPLES[:10], get_task("RTE"), gpt2_like, "causal", 2, 0,
                           batching="random", step_batch_size=4)
    mixed = shuffle_steps(a + [{**x, "step": x["step"] + 100} for x in b], seed=5)
    assert len(mixed) == len(a) + len(b)
    steps = [x["step"] for x in mixed]
    assert steps == sorted(steps) and set(steps) == set(range(8 + 3))
    as_sorted = lambda steps: sorted(sorted(s) for s in steps)
    assert as_sorted(_steps(mixed)) == as_sorted(_steps(a) + _steps(b))
    assert _steps(mixed) != _steps(a) + _steps(b)  # reordered
    assert shuffle_steps(a, seed=5)[0]["input_ids"].tolist() == shuffle_steps(
        a, seed=5)[0]["input_ids"].tolist()
