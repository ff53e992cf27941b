"""Evaluation: answer normalisation, greedy generation with padding, rank classification, accuracy.

The tiny random models get a large initialisation so that their greedy answers vary from token to
token (with the default one they repeat a single byte), and their logits are far from ties, so
that float noise from padding cannot flip an argmax.
"""

import contextlib
import dataclasses

import pytest
import torch

import jumplora.evaluate as evaluate_module
from jumplora.data import Example, get_task, label_token_ids, make_eval_batches
from jumplora.evaluate import (
    EvalResult,
    evaluate_task,
    generate_answers,
    generate_ids,
    generation_budget,
    label_scores,
    normalize_answer,
    normalize_authors,
)
from jumplora.testing import tiny_llama, tiny_t5

# labels World, Sports, Business, Science or Technology; no instruction, to keep prompts short
TASK = dataclasses.replace(get_task("agnews"), instruction=None)
SENTENCES = [
    "Stocks rallied on Friday.",
    "The home team won the cup final after extra time, and the fans celebrated late into the night.",
    "New chip.",
    "Rain.",
    "Parliament passed the budget bill after a long debate about taxes.",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy machine several threads contend badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def loaded(request):
    if request.param == "causal":
        return tiny_llama(0, initializer_range=0.5)
    return tiny_t5(0, initializer_factor=25.0)


def _examples(labels=None):
    labels = labels or ["World"] * len(SENTENCES)
    return [Example(sentence, label) for sentence, label in zip(SENTENCES, labels)]


def _batches(loaded, examples, batch_size):
    return make_eval_batches(examples, TASK, loaded.tokenizer, loaded.kind, batch_size, header=False)


def _alone(loaded, example):
    (batch,) = _batches(loaded, [example], 1)
    return batch


def _pad(loaded, batch, extra):
    """The one-example batch with `extra` padding tokens added on the kind's padding side."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pads = torch.full((1, extra), loaded.tokenizer.pad_token_id, dtype=ids.dtype)
    zeros = torch.zeros((1, extra), dtype=mask.dtype)
    if loaded.kind == "causal":
        return torch.cat([pads, ids], 1), torch.cat([zeros, mask], 1)
    return torch.cat([ids, pads], 1), torch.cat([mask, zeros], 1)


def _label_ids(loaded):
    return label_token_ids(TASK, loaded.tokenizer, loaded.kind)


def _greedy_by_hand(loaded, batch, steps):
    """Greedy decoding of one unpadded prompt by full forwards (no cache), up to EOS."""
    model, eos = loaded.model, loaded.tokenizer.eos_token_id
    ids = batch["input_ids"]
    out = []
    with torch.no_grad():
        if loaded.kind == "causal":
            seq = ids
            for _ in range(steps):
                token = int(model(input_ids=seq).logits[0, -1].argmax())
                if token == eos:
                    break
                out.append(token)
                seq = torch.cat([seq, torch.tensor([[token]])], 1)
        else:
            decoder = torch.tensor([[model.config.decoder_start_token_id]])
            for _ in range(steps):
                token = int(model(input_ids=ids, decoder_input_ids=decoder).logits[0, -1].argmax())
                if token == eos:
                    break
                out.append(token)
                decoder = torch.cat([decoder, torch.tensor([[token]])], 1)
    return out


def _direct_scores(loaded, batch, label_ids):
    """log p(label + EOS | prompt) summed, for one unpadded prompt, by one plain forward each."""
    model, prompt = loaded.model, batch["input_ids"]
    scores = []
    with torch.no_grad():
        for ids in label_ids:
            target = torch.tensor([ids])
            if loaded.kind == "causal":
                logits = model(input_ids=torch.cat([prompt, target], 1)).logits
                logits = logits[:, prompt.shape[1] - 1: -1]  # the positions that predict the label
            else:
                logits = model(input_ids=prompt, labels=target).logits
            log_probs = logits.float().log_softmax(-1)
            scores.append(float(log_probs[0, torch.arange(len(ids)), target[0]].sum()))
    return scores


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("Science or Technology", "science or technology."),
        ("  Science  or\tTechnology\n", "ScienceorTechnology"),
        ("Society & Culture", "society culture"),
        ("not_entailment", "Not entailment!"),
        ("Good", " good"),
    ],
)
def test_normalize_answer_matches(a, b):
    assert normalize_answer(a) == normalize_answer(b)


def test_normalize_answer_values():
    assert normalize_answer(" Science or Technology.") == "scienceortechnology"
    assert normalize_answer("Very Positive") == "verypositive"
    assert normalize_answer("") == ""
    assert normalize_answer("entailment") != normalize_answer("not_entailment")
    assert normalize_answer("positive") != normalize_answer("very positive")


def test_generation_budget():
    assert generation_budget([[5, 6, 1], [7, 1], [8, 9, 10, 11, 1]]) == 5
    assert generation_budget([[1]]) == 1
    with pytest.raises(ValueError):
        generation_budget([])


def test_generation_budget_covers_the_labels(loaded):
    label_ids = _label_ids(loaded)
    assert all(ids[-1] == loaded.tokenizer.eos_token_id for ids in label_ids)
    longest = max(label_ids, key=len)  # "Science or Technology" + EOS
    assert generation_budget(label_ids) == len(longest)


def test_padded_generation_matches_alone(loaded):
    budget = 12
    examples = _examples()
    (batch,) = _batches(loaded, examples, len(examples))
    assert batch["attention_mask"].eq(0).any()  # the batch really is padded
    batched = generate_ids(loaded.model, loaded.tokenizer, loaded.kind, batch["input_ids"],
                           batch["attention_mask"], budget)
    distinct = set()
    for row, i in zip(batched, batch["index"]):
        alone = _alone(loaded, examples[i])
        single = generate_ids(loaded.model, loaded.tokenizer, loaded.kind, alone["input_ids"],
                              alone["attention_mask"], budget)[0]
        assert row == single, f"example {i}: padded batch {row} != alone {single}"
        # the KV-cached, sliced generation is the plain greedy continuation
        assert single == _greedy_by_hand(loaded, alone, budget)
        # a batch of ONE example with extra padding generates the same
        ids, mask = _pad(loaded, alone, 7)
        padded = generate_ids(loaded.model, loaded.tokenizer, loaded.kind, ids, mask, budget)[0]
        assert padded == single
        distinct.add(tuple(single))
    assert len(distinct) > 1  # the model does not answer the same to every prompt


def test_rank_matches_direct_computation(loaded):
    label_ids = _label_ids(loaded)
    examples = _examples()
    (batch,) = _batches(loaded, examples, len(examples))
    scores = label_scores(loaded.model, loaded.kind, batch["input_ids"], batch["attention_mask"],
                          label_ids, pad_id=loaded.tokenizer.pad_token_id)
    assert scores.shape == (len(examples), len(label_ids))
    # the shortest prompt is the most padded row of the batch
    row = min(range(len(examples)), key=lambda r: int(batch["attention_mask"][r].sum()))
    i = batch["index"][row]
    direct = _direct_scores(loaded, _alone(loaded, examples[i]), label_ids)
    assert scores[row].tolist() == pytest.approx(direct, rel=1e-5, abs=1e-3)
    if loaded.kind == "causal":  # the cached prompt path equals the recompute-everything path
        again = label_scores(loaded.model, "causal", batch["input_ids"], batch["attention_mask"],
                             label_ids, use_prompt_cache=False)
        torch.testing.assert_close(scores, again, atol=1e-3, rtol=1e-5)

    result = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, _batches(loaded, examples, 2),
                           label_ids, mode="rank")
    best = max(range(len(direct)), key=direct.__getitem__)
    assert result.predictions[i] == TASK.labels[best]
    assert result.predictions_rank == result.predictions
    assert result.accuracy_rank == result.accuracy


def test_accuracy_against_forced_references(loaded):
    label_ids = _label_ids(loaded)
    examples = _examples()
    first = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, _batches(loaded, examples, 2),
                          label_ids, mode="both")
    n = len(examples)
    assert isinstance(first, EvalResult) and first.n == n and first.mode == "both"
    assert len(first.predictions) == len(first.predictions_rank) == n
    assert first.references == ["World"] * n

    # references = what the model generated (and ranked) itself: 100 %
    own = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind,
                        _batches(loaded, _examples(first.predictions), 2), label_ids)
    assert own.accuracy == 100.0 and own.predictions == first.predictions
    ranked = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind,
                           _batches(loaded, _examples(first.predictions_rank), 3), label_ids,
                           mode="rank")
    assert ranked.accuracy == 100.0

    # a label the model did not produce: 0 %
    assert all(normalize_answer(p) != "sports" for p in first.predictions)
    other = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind,
                          _batches(loaded, _examples(["Sports"] * n), 2), label_ids)
    assert other.accuracy == 0.0
    assert other.accuracy_labelled == 0.0 and other.n_labelled == n  # every reference is a label

    # one reference wrong, another differing only in case, punctuation and spaces
    refs = list(first.predictions)
    refs[1] = "Sports"
    refs[2] = " " + refs[2].upper() + "."
    mixed = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind,
                          _batches(loaded, _examples(refs), 2), label_ids)
    assert mixed.accuracy == pytest.approx(100.0 * (n - 1) / n)


def test_predictions_in_original_order(loaded):
    label_ids = _label_ids(loaded)
    labels = ["World", "Sports", "Business", "Science or Technology", "World"]
    examples = _examples(labels)
    batches = _batches(loaded, examples, 2)
    assert [i for b in batches for i in b["index"]] != list(range(len(examples)))  # reordered
    result = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, batches, label_ids,
                           mode="both")
    assert result.references == labels
    for i, example in enumerate(examples):
        alone = evaluate_task(loaded.model, loaded.tokenizer, loaded.kind,
                              [_alone(loaded, example)], label_ids, mode="both")
        assert result.predictions[i] == alone.predictions[0]
        assert result.predictions_rank[i] == alone.predictions_rank[0]


def test_eval_mode_no_grad_autocast_and_restore(loaded):
    model = loaded.model
    seen = []
    hook = model.register_forward_hook(
        lambda module, args, output: seen.append((module.training, torch.is_grad_enabled()))
    )
    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(True)
        yield

    model.train()
    try:
        evaluate_task(model, loaded.tokenizer, loaded.kind,
                      _batches(loaded, _examples()[:2], 2), _label_ids(loaded), mode="both",
                      device="cpu", autocast=recording())
        assert model.training  # restored
        model.eval()
        evaluate_task(model, loaded.tokenizer, loaded.kind,
                      _batches(loaded, _examples()[:1], 1), _label_ids(loaded), mode="rank",
                      autocast=recording)  # a callable returning a context manager works too
        assert not model.training
    finally:
        hook.remove()
        model.eval()
    assert entered == [True, True]
    assert seen and all(state == (False, False) for state in seen)


def test_bad_inputs(loaded):
    label_ids = _label_ids(loaded)
    batches = _batches(loaded, _examples()[:2], 2)
    with pytest.raises(ValueError, match="mode"):
        evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, batches, label_ids, mode="beam")
    with pytest.raises(ValueError, match="no examples"):
        evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, [], label_ids)
    with pytest.raises(ValueError, match="repeat"):
        evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, batches + batches, label_ids,
                      mode="rank")


def test_causal_prompts_must_be_left_padded():
    loaded = tiny_llama(0)
    (batch,) = make_eval_batches(_examples()[:2], TASK, loaded.tokenizer, "causal", 2, header=False)
    mask = batch["attention_mask"]
    assert mask[:, 0].eq(0).any()  # left-padded as built
    right_ids = torch.stack([torch.cat([r[m.bool()], r[~m.bool()]]) for r, m in
                             zip(batch["input_ids"], mask)])
    right_mask = mask.flip(1)
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate_ids(loaded.model, loaded.tokenizer, "causal", right_ids, right_mask, 4)
    with pytest.raises(ValueError, match="LEFT-padded"):
        label_scores(loaded.model, "causal", right_ids, right_mask, _label_ids(loaded))


# --------------------------------------------------------------------------------------------
# the authors' exact match, unlabelled references and the generation budget, on scripted answers


def test_normalize_authors():
    assert normalize_authors("  Science  or\tTechnology\n") == "science or technology"
    assert normalize_authors("Sports.") != normalize_authors("Sports")
    assert normalize_authors("ScienceorTechnology") != normalize_authors("Science or Technology")
    assert normalize_authors("not_entailment") == "not_entailment"
    assert normalize_authors("-") == "-" and normalize_answer("-") == ""


# sentence -> (reference, generated answer, ranked label)
SCRIPT = {
    "Stocks rallied.": ("World", "World", "World"),
    "The cup final.": ("Sports", "Sports.", "Business"),
    "Unlabelled one.": ("-", "World", "World"),
    "Unlabelled two.": ("-", "-", "World"),
    "Budget bill.": ("Business", " business ", "Business"),
    "Unlabelled three.": ("-", "", "Sports"),
}


@pytest.fixture
def scripted(monkeypatch):
    """evaluate_task on a tiny model whose generation and ranking are replaced by SCRIPT."""
    loaded = tiny_llama(0)
    tok = loaded.tokenizer
    budgets = []

    def sentence_of(ids, mask):
        text = tok.decode(ids[mask.bool()].tolist(), skip_special_tokens=True)
        return next(s for s in SCRIPT if s in text)

    def fake_generate(model, tokenizer, kind, input_ids, attention_mask, max_new_tokens):
        budgets.append(max_new_tokens)
        return [SCRIPT[sentence_of(i, m)][1] for i, m in zip(input_ids, attention_mask)]

    def fake_scores(model, kind, input_ids, attention_mask, label_ids, pad_id=0):
        scores = torch.zeros(len(input_ids), len(TASK.labels))
        for row, (i, m) in enumerate(zip(input_ids, attention_mask)):
            scores[row, TASK.labels.index(SCRIPT[sentence_of(i, m)][2])] = 1.0
        return scores

    monkeypatch.setattr(evaluate_module, "generate_answers", fake_generate)
    monkeypatch.setattr(evaluate_module, "label_scores", fake_scores)
    examples = [Example(sentence, ref) for sentence, (ref, _, _) in SCRIPT.items()]
    batches = make_eval_batches(examples, TASK, tok, "causal", 2, prompt_style="authors")
    label_ids = label_token_ids(TASK, tok, "causal")

    def run(**kwargs):
        return evaluate_task(loaded.model, tok, "causal", batches, label_ids, labels=TASK.labels,
                             **kwargs)

    return run, budgets, label_ids


def test_unlabelled_references_and_authors_match(scripted):
    run, _, _ = scripted
    authors = run(mode="both", answer_match="authors")
    # hits: "World"; "-" produced literally; " business " (case and spaces); not "Sports."
    assert authors.n == 6 and authors.n_labelled == 3
    assert authors.accuracy == pytest.approx(100 * 3 / 6)
    assert authors.accuracy_labelled == pytest.approx(100 * 2 / 3)
    # ranking never hits an unlabelled reference
    assert authors.accuracy_rank == pytest.approx(100 * 2 / 6)
    assert authors.accuracy_rank_labelled == pytest.approx(100 * 2 / 3)
    assert authors.references == [ref for ref, _, _ in SCRIPT.values()]
    assert authors.predictions == [answer for _, answer, _ in SCRIPT.values()]
    # per example, in the original order, which answers counted (the generation ones in mode both)
    from jumplora.evaluate import normalize_authors
    expected = [normalize_authors(answer) == normalize_authors(ref) for ref, answer, _ in SCRIPT.values()]
    assert authors.correct == expected and sum(expected) == 3
    assert authors.correct_string == "".join("1" if hit else "0" for hit in expected)
    rank_only = run(mode="rank", answer_match="authors")
    assert rank_only.correct == [ref == ranked for ref, _, ranked in SCRIPT.values()]
    # no-punct: "Sports." hits; "-" normalises to nothing and never matches (not even "")
    legacy = run(mode="generate", answer_match="no-punct")
    assert legacy.accuracy == pytest.approx(100 * 3 / 6)
    assert legacy.accuracy_labelled == 100.0 and legacy.n_labelled == 3
    rank = run(mode="rank", answer_match="authors")
    assert rank.accuracy == authors.accuracy_rank and rank.accuracy_labelled == pytest.approx(
        100 * 2 / 3)
    with pytest.raises(ValueError, match="answer_match"):
        run(answer_match="exact")


def test_generation_budget_option(scripted):
    run, budgets, label_ids = scripted
    run(max_new_tokens=8)
    assert set(budgets) == {8}
    budgets.clear()
    run()
    assert set(budgets) == {generation_budget(label_ids)} and generation_budget(label_ids) != 8
    with pytest.raises(ValueError, match="max_new_tokens"):
        run(max_new_tokens=0)


# ---------------------------------------------------------------------------------------------
# jumplora.greedy: the loop behind stop="decided"


def test_greedy_loop_generates_what_model_generate_does(loaded):
    from jumplora.evaluate import _decoder_start_id
    from jumplora.greedy import greedy_ids

    budget = 12
    examples = _examples()
    (batch,) = _batches(loaded, examples, len(examples))
    tok = loaded.tokenizer
    with torch.no_grad():
        want = generate_ids(loaded.model, tok, loaded.kind, batch["input_ids"], batch["attention_mask"], budget)
        got = greedy_ids(loaded.model, loaded.kind, batch["input_ids"], batch["attention_mask"], budget,
                         tok.eos_token_id, decoder_start=_decoder_start_id(loaded.model, tok.pad_token_id))
    assert got == want
    assert len({tuple(r) for r in want}) > 1


def test_greedy_loop_stops_a_row_when_asked_and_the_others_go_on(loaded):
    from jumplora.evaluate import _decoder_start_id
    from jumplora.greedy import greedy_ids

    examples = _examples()
    (batch,) = _batches(loaded, examples, len(examples))
    tok = loaded.tokenizer
    args = (loaded.model, loaded.kind, batch["input_ids"], batch["attention_mask"], 10, tok.eos_token_id)
    start = _decoder_start_id(loaded.model, tok.pad_token_id)
    with torch.no_grad():
        full = greedy_ids(*args, decoder_start=start)
        cut = greedy_ids(*args, decoder_start=start, still_open=lambda row, ids: row != 0 or len(ids) < 2)
    assert cut[0] == full[0][:2] and cut[1:] == full[1:]


def _letters_only(loaded):
    """A copy of the tiny model that can only say ASCII letters, spaces, full stops and EOS (the other
    tokens' output rows zeroed, their logits 0 below the letters' best), so answers are text."""
    import copy

    model = copy.deepcopy(loaded.model)
    tok = loaded.tokenizer
    keep = [i for i in range(model.get_output_embeddings().weight.shape[0])
            if i == tok.eos_token_id or (lambda t: len(t) == 1 and (t.isascii() and (t.isalpha() or t in " .")))(
                tok.decode([i]))]
    with torch.no_grad():
        weight = model.get_output_embeddings().weight
        dropped = torch.ones(weight.shape[0], dtype=torch.bool)
        dropped[keep] = False
        weight[dropped] = 0.0
    return dataclasses.replace(loaded, model=model)


@pytest.mark.parametrize("answer_match", ["authors", "no-punct"])
def test_decided_stop_gives_the_same_outcome_per_example(loaded, answer_match):
    loaded = _letters_only(loaded)
    examples = _examples()
    (batch,) = _batches(loaded, examples, len(examples))
    label_ids = _label_ids(loaded)
    with torch.no_grad():
        answers = generate_answers(loaded.model, loaded.tokenizer, loaded.kind, batch["input_ids"],
                                   batch["attention_mask"], 8)
    # references: half of them the model's own answers (hits, some only after normalisation), the
    # others a prefix of the answer (decided wrong after it) or a label word
    refs = {}
    for n, (i, answer) in enumerate(zip(batch["index"], answers)):
        refs[i] = [answer.upper() + " ", answer[: max(1, len(answer) // 2)], "World", answer][n % 4]
    relabelled = _examples([refs[i] for i in range(len(examples))])
    (batch,) = _batches(loaded, relabelled, len(relabelled))
    results = {stop: evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, [batch], label_ids, labels=list(TASK.labels),
                                   max_new_tokens=8, answer_match=answer_match, stop=stop)
               for stop in ("eos", "decided")}
    assert results["decided"].correct == results["eos"].correct
    assert 0 < sum(results["eos"].correct) < len(examples)
    # the wrong rows did stop early: their answers are cut where they left the reference
    pairs = list(zip(results["decided"].predictions, results["eos"].predictions))
    assert any(len(cut) < len(whole) and whole.startswith(cut) for cut, whole in pairs)
    with pytest.raises(ValueError, match="unknown generation stop"):
        evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, [batch], label_ids, stop="early")


def test_decided_stop_leaves_a_model_with_logits_processors_to_generate(loaded, monkeypatch):
    import copy

    model = copy.deepcopy(loaded.model)
    model.generation_config.repetition_penalty = 1.3  # generate's greedy choice is then not the argmax
    used = []
    monkeypatch.setattr(evaluate_module, "greedy_ids", lambda *a, **k: used.append("greedy") or [[]])
    examples = _examples()
    (batch,) = _batches(loaded, examples, len(examples))
    evaluate_task(model, loaded.tokenizer, loaded.kind, [batch], _label_ids(loaded), max_new_tokens=4, stop="decided")
    assert used == []
    evaluate_task(loaded.model, loaded.tokenizer, loaded.kind, [batch], _label_ids(loaded), max_new_tokens=4,
                  stop="decided")
    assert used == ["greedy"]
