"""Prompt text, tokenization with sentence-only truncation, and the training / evaluation batches.

The tokenizers are tiny ones trained here on a few sentences (no hub): a GPT-2-like byte-level BPE
(no BOS, no pad), the same with a BOS (Llama-like) and a T5-like Unigram that appends EOS.
"""

from __future__ import annotations

import pytest

from jumplora.data import (
    TASKS,
    Example,
    PromptEncoder,
    encode_prompt,
    encode_target,
    format_prompt,
    get_task,
    label_token_ids,
    load_task,
    make_eval_batches,
    make_train_batches,
)
from jumplora.errors import ConfigError
from tokenizers_for_tests import byte_bpe, t5_like as t5_like_tokenizer

CORPUS = [format_prompt(spec, "sentence 1: The cat sat on the mat.\nsentence 2: A cat sits.")
          + " " + label for spec in TASKS.values() for label in spec.labels] * 2


@pytest.fixture(scope="module")
def gpt2_like():
    return byte_bpe(CORPUS, bos=False)


@pytest.fixture(scope="module")
def llama_like():
    return byte_bpe(CORPUS, bos=True)


@pytest.fixture(scope="module")
def t5_like():
    return t5_like_tokenizer(CORPUS)


# --------------------------------------------------------------------------- prompt text

EXPECTED_PROMPTS = {
    "agnews": "Task: TC\nDataset: agnews\nWhat is the topic of the following paragraph? Choose one "
              "from the option.\nOption: World, Sports, Business, Science or Technology\nS\nAnswer:",
    "SST-2": "Task: SC\nDataset: SST-2\nWhat is the sentiment of the following paragraph? Choose one "
             "from the option.\nOption: Good, Bad\nS\nAnswer:",
    "CB": 'Task: NLI\nDataset: CB\nWhat is the logical relationship between the "sentence 1" and the '
          '"sentence 2"? Choose one from the option.\nOption: entailment, contradiction, neutral\n'
          "S\nAnswer:",
    "QQP": 'Task: QQP\nDataset: QQP\nWhether the "first sentence" and the "second sentence" have the '
           "same meaning? Choose one from the option.\nOption: False, True\nS\nAnswer:",
    "BoolQA": "Task: BoolQA\nDataset: BoolQA\nAccording to the following passage, is the question "
              "true or false? Choose one from the option.\nOption: True, False\nS\nAnswer:",
    "MultiRC": "Task: MultiRC\nDataset: MultiRC\nAccording to the following passage and question, is "
               "the candidate answer true or false? Choose one from the option.\nOption: False, True"
               "\nS\nAnswer:",
    "WiC": "Task: WiC\nDataset: WiC\nGiven a word and two sentences, whether the word is used with "
           "the same sense in both sentence? Choose one from the option.\nOption: True, False\n"
           "S\nAnswer:",
    "COPA": "Task: COPA\nDataset: COPA\nOption: A, B\nS\nAnswer:",
}


@pytest.mark.parametrize("name", list(EXPECTED_PROMPTS))
def test_prompt_format_per_group(name):
    spec = get_task(name)
    assert format_prompt(spec, "S") == EXPECTED_PROMPTS[name]
    headless = EXPECTED_PROMPTS[name].split("\n", 2)[2]
    assert format_prompt(spec, "S", header=False) == headless


def test_prompt_from_task_data_uses_the_files(cl_benchmark_dir):
    data = load_task("cb", cl_benchmark_dir)
    assert format_prompt(data, "S") == EXPECTED_PROMPTS["CB"]


# --------------------------------------------------------------------------- tokenization

LONG = "sentence 1: " + " ".join(f"cat{i} sat on the mat." for i in range(60)) + "\nsentence 2: ok."


def test_piecewise_encoding_matches_whole_prompt(gpt2_like):
    spec = get_task("agnews")
    for sentence in ("Title: A cat\nText: sat on the mat.\n", "plain sentence"):
        ids = encode_prompt(gpt2_like, spec, sentence, kind="causal")
        assert ids == gpt2_like.encode(format_prompt(spec, sentence), add_special_tokens=False)


@pytest.mark.parametrize("tokenizer_name, kind", [("gpt2_like", "causal"), ("llama_like", "causal"),
                                                   ("t5_like", "seq2seq")])
def test_truncation_cuts_only_the_sentence(request, tokenizer_name, kind):
    tokenizer = request.getfixturevalue(tokenizer_name)
    spec = get_task("CB")
    encoder = PromptEncoder(tokenizer, spec, kind)
    budget = len(encoder.before) + len(encoder.after) + 7
    full = encode_prompt(tokenizer, spec, LONG, kind=kind)
    cut = encode_prompt(tokenizer, spec, LONG, max_input_tokens=budget, kind=kind)
    assert len(full) > budget and len(cut) == budget
    assert cut[: len(encoder.before)] == full[: len(encoder.before)]
    assert cut[-len(encoder.after):] == full[-len(encoder.after):]
    assert cut[len(encoder.before):-len(encoder.after)] == full[len(encoder.before):][:7]
    text = tokenizer.decode(cut, skip_special_tokens=True)
    assert text.rstrip().endswith("Answer:") and "Option: entailment, contradiction, neutral" in text
    short = encode_prompt(tokenizer, spec, "tiny", max_input_tokens=budget, kind=kind)
    assert short == encode_prompt(tokenizer, spec, "tiny", kind=kind)
    with pytest.raises(ConfigError, match="task CB: max_input_tokens=5 leaves no room"):
        encode_prompt(tokenizer, spec, LONG, max_input_tokens=5, kind=kind)


def test_special_tokens_follow_the_model_kind(gpt2_like, llama_like, t5_like):
    spec = get_task("SST-2")
    assert encode_prompt(t5_like, spec, "fine")[-1] == t5_like.eos_token_id
    assert encode_prompt(llama_like, spec, "fine", kind="causal")[0] == llama_like.bos_token_id
    assert llama_like.eos_token_id not in encode_prompt(llama_like, spec, "fine", kind="causal")
    ids = encode_prompt(gpt2_like, spec, "fine", kind="causal")
    assert gpt2_like.decode(ids) == format_prompt(spec, "fine")


def test_causal_target_matches_generation(gpt2_like, llama_like):
    spec = get_task("agnews")
    for tokenizer in (gpt2_like, llama_like):
        prompt = encode_prompt(tokenizer, spec, "A cat", kind="causal")
        for label in spec.labels:
            target = encode_target(tokenizer, label, "causal")
            assert target[-1] == tokenizer.eos_token_id
            joined = tokenizer.encode(format_prompt(spec, "A cat") + " " + label)
            assert joined == prompt + target[:-1]
    assert label_token_ids(spec, gpt2_like, "causal") == [
        encode_target(gpt2_like, label, "causal") for label in spec.labels]


# --------------------------------------------------------------------------- batches

EXAMPLES = [Example(f"sentence 1: {'the cat ' * (1 + i % 9)}\nsentence 2: cat {i}.",
                    ("entailment", "contradiction", "neutral")[i % 3]) for i in range(30)]


def test_causal_batches_mask_all_but_target(gpt2_like):
    spec = get_task("CB")
    batches = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", batch_size=4, seed=0)
    assert sum(len(b["input_ids"]) for b in batches) == len(EXAMPLES)
    prompts = {tuple(encode_prompt(gpt2_like, spec, e.sentence, kind="causal")): e for e in EXAMPLES}
    seen = []
    pad = gpt2_like.eos_token_id  # no pad token: EOS pads, masked out
    for batch in batches:
        assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any()  # right padding
            assert (ids[n:] == pad).all() and (labels[n:] == -100).all()
            target = labels[labels != -100].tolist()
            prompt = ids[: n - len(target)].tolist()
            assert target == ids[n - len(target):n].tolist()
            assert (labels[: len(prompt)] == -100).all()
            example = prompts[tuple(prompt)]
            assert target == encode_target(gpt2_like, example.label, "causal")
            assert gpt2_like.decode(target) == f" {example.label}<|endoftext|>"
            seen.append(example)
    assert sorted(seen, key=EXAMPLES.index) == EXAMPLES


def test_seq2seq_batches_have_target_plus_eos_labels(t5_like):
    spec = get_task("CB")
    batches = make_train_batches(EXAMPLES, spec, t5_like, "seq2seq", batch_size=4, seed=0)
    targets = {tuple(encode_target(t5_like, label, "seq2seq")) for label in spec.labels}
    for batch in batches:
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(mask.sum())
            assert ids[n - 1] == t5_like.eos_token_id and (ids[n:] == t5_like.pad_token_id).all()
            kept = labels[labels != -100].tolist()
            assert tuple(kept) in targets and kept[-1] == t5_like.eos_token_id
            assert labels[: len(kept)].tolist() == kept and (labels[len(kept):] == -100).all()


def test_train_batches_are_seeded_and_grouped_by_length(gpt2_like):
    spec = get_task("CB")
    a = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", batch_size=3, seed=1)
    b = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", batch_size=3, seed=1)
    c = make_train_batches(EXAMPLES, spec, gpt2_like, "causal", batch_size=3, seed=2)
    as_lists = lambda batches: [batch["input_ids"].tolist() for batch in batches]
    assert as_lists(a) == as_lists(b)
    assert as_lists(a) != as_lists(c)
    # one chunk (fewer than 50 batches): batches are consecutive slices of the length order
    spans = sorted((int(m.sum(1).min()), int(m.sum(1).max())) for m in (x["attention_mask"] for x in a))
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))


@pytest.mark.parametrize("tokenizer_name, kind", [("gpt2_like", "causal"), ("t5_like", "seq2seq")])
def test_eval_batches(request, tokenizer_name, kind):
    tokenizer = request.getfixturevalue(tokenizer_name)
    spec = get_task("CB")
    batches = make_eval_batches(EXAMPLES, spec, tokenizer, kind, batch_size=4)
    indices = [i for batch in batches for i in batch["index"]]
    assert sorted(indices) == list(range(len(EXAMPLES)))
    lengths = []
    for batch in batches:
        assert batch["references"] == [EXAMPLES[i].label for i in batch["index"]]
        mask = batch["attention_mask"]
        if kind == "causal":
            assert mask[:, -1].all()  # left padding: every prompt ends at the last column
        else:
            assert mask[:, 0].all()
        for i, ids, row in zip(batch["index"], batch["input_ids"], mask):
            assert ids[row.bool()].tolist() == encode_prompt(tokenizer, spec, EXAMPLES[i].sentence,
                                                             kind=kind)
            lengths.append(int(row.sum()))
    assert lengths == sorted(lengths, reverse=True)
