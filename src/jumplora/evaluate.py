"""Evaluating one task: greedy generation with exact match, or rank classification over labels.

Both work on the prompt batches of `jumplora.data.make_eval_batches` (prompt ``input_ids`` /
``attention_mask``, LEFT-padded for causal models and right-padded for seq2seq, the reference
label words in ``references``, the examples' positions in ``index``) and on the label token ids of
`jumplora.data.label_token_ids` (each label's target tokens + EOS, as the model sees them after the
prompt).

- ``"generate"``: greedy decoding (no sampling, one beam, KV cache) of at most `max_new_tokens`
  new tokens (the authors: 8; None: `generation_budget(label_ids)`), stopping at EOS; the new
  tokens are decoded and compared with the reference after normalisation (exact match):
  `answer_match="authors"` lower-cases and collapses white space (`normalize_authors`, the
  authors' ``" ".join(x.strip().lower().split())``), ``"no-punct"`` also removes punctuation and
  all white space (`normalize_answer`).
  `stop="decided"` decodes with `jumplora.greedy`'s loop instead of `model.generate`, which stops
  each row once its text can no longer match its reference: the same outcome per example, fewer
  decoding steps (a wrong answer is then kept only up to where it went wrong).
- ``"rank"``: every label's tokens (+ EOS) are scored by their summed log-probability given the
  prompt; the best-scoring label is the prediction.
- ``"both"``: the two; `EvalResult.accuracy` is the generation accuracy and
  `EvalResult.accuracy_rank` the ranking one.

A reference outside the label set (MNLI's unlabelled "-", kept by the data layer with
``unlabelled_test="count-wrong"``) counts in `accuracy`: generation hits it only by producing it
literally (never when it normalises to nothing), ranking never. `accuracy_labelled` is the
accuracy over the references in the label set only.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from jumplora.greedy import accepts, greedy_ids, prompt_positions
from jumplora.tokens import check_kind, eos_id, pad_id

MODES = ("generate", "rank", "both")
STOPS = ("eos", "decided")  # generation: model.generate to EOS / the budget, or jumplora.greedy's early stop
ANSWER_MATCH = ("authors", "no-punct")


def normalize_authors(text: str) -> str:
    """The authors' exact-match form: stripped, lower-cased, runs of white space made one space.
    Punctuation stays: "Sports." does not match "Sports"."""
    return " ".join(str(text).strip().lower().split())


def normalize_answer(text: str) -> str:
    """The form in which a generated answer and a reference are compared.

    Lower-cases, removes every punctuation character (Unicode category P*: ``.,;:!?'"&-_()`` ...)
    and ALL white space, including the spaces between words. So "Science or Technology" and
    " science or technology." both become "scienceortechnology". No label set of the benchmark
    collides under this mapping (e.g. "not_entailment" → "notentailment" ≠ "entailment").
    """
    return "".join(
        ch for ch in str(text).lower()
        if not ch.isspace() and not unicodedata.category(ch).startswith("P")
    )


def answer_normalizer(answer_match: str):
    """The normalisation function of `answer_match` ("authors" or "no-punct")."""
    if answer_match not in ANSWER_MATCH:
        raise ValueError(f"unknown answer_match {answer_match!r}; expected one of {ANSWER_MATCH}")
    return normalize_authors if answer_match == "authors" else normalize_answer


def generation_budget(label_ids: Sequence[Sequence[int]]) -> int:
    """max_new_tokens for generation: the longest label's token count, EOS included."""
    if not label_ids:
        raise ValueError("generation budget: the label set is empty")
    budget = max(len(ids) for ids in label_ids)
    if budget == 0:
        raise ValueError("generation budget: every label has zero tokens")
    return budget


@dataclass
class EvalResult:
    """One task's evaluation. Accuracies are in percent; lists follow the original example order.

    `accuracy` is the generation accuracy for modes "generate" and "both" and the ranking one for
    mode "rank", over all `n` examples; `accuracy_rank` / `predictions_rank` are set whenever
    ranking ran ("rank", "both"). `accuracy_labelled` / `accuracy_rank_labelled` are the same over
    the `n_labelled` examples whose reference is in the label set (None when there are none); they
    equal the plain ones when every reference is labelled.
    """

    accuracy: float
    n: int
    predictions: list[str]
    references: list[str]
    mode: str = "generate"
    accuracy_rank: float | None = None
    predictions_rank: list[str] | None = None
    accuracy_labelled: float | None = None
    n_labelled: int | None = None
    accuracy_rank_labelled: float | None = None
    # per example, in the original order: did the answer count as correct (for `accuracy`)
    correct: list[bool] | None = None

    @property
    def correct_string(self) -> str:
        """`correct` as "0"/"1" characters: one per test example, for paired bootstraps over runs."""
        return "".join("1" if hit else "0" for hit in (self.correct or []))


# ---------------------------------------------------------------------------------------------
# helpers


def _model_device(model) -> torch.device:
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


def _check_left_padded(attention_mask: torch.Tensor) -> None:
    if attention_mask.shape[1] and bool((attention_mask[:, -1] == 0).any()):
        raise ValueError(
            "causal-model prompts must be LEFT-padded (a row ends with padding); "
            "build them with the causal kind"
        )


def _decoder_start_id(model, pad_id: int) -> int:
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    return pad_id if start is None else int(start)


# ---------------------------------------------------------------------------------------------
# generation


def generate_ids(model, tokenizer, kind: str, input_ids, attention_mask,
                 max_new_tokens: int) -> list[list[int]]:
    """Greedy, KV-cached generation of at most `max_new_tokens` tokens per prompt, stopping at
    EOS; returns each row's NEW token ids up to (without) the first EOS.

    Causal prompts must be left-padded; the attention mask is passed so that transformers derives
    the position ids from it (padding does not shift the positions of the real tokens).
    """
    check_kind(kind)
    eos, pad = eos_id(tokenizer, model), pad_id(tokenizer, model)
    if kind == "causal":
        _check_left_padded(attention_mask)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        use_cache=True,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    if not torch.is_tensor(output):  # a ModelOutput when return_dict_in_generate is configured
        output = output.sequences
    # causal: the output repeats the prompt; seq2seq: it starts with the decoder start token
    new_tokens = output[:, input_ids.shape[1]:] if kind == "causal" else output[:, 1:]
    rows = []
    for row in new_tokens.tolist():
        if eos in row:
            row = row[: row.index(eos)]
        rows.append(row)
    return rows


# generation_config settings under which model.generate's greedy choice is not the plain argmax
_PROCESSORS = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
               "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "suppress_tokens": (None,),
               "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
               "sequence_bias": (None,), "forced_decoder_ids": (None,), "min_length": (None, 0),
               "exponential_decay_length_penalty": (None,), "encoder_repetition_penalty": (None, 1.0)}


def _changes_greedy_choice(model) -> bool:
    config = getattr(model, "generation_config", None)
    return config is not None and any(getattr(config, name, None) not in plain for name, plain in _PROCESSORS.items())


def _decided_answers(model, tokenizer, kind: str, input_ids, attention_mask, budget: int,
                     keys: list[str], norm) -> list[str]:
    """`generate_answers` with each row stopped once it can no longer match its normalised reference
    (`jumplora.greedy`): the same correct / wrong outcome, the wrong answers cut where they went wrong.

    A row stops when its text so far, normalised and without white space, is not a prefix of its
    reference so normalised: a necessary condition of a match, since both normalisations map
    character by character, and the decoder's clean-up of the final text only removes spaces. A
    text ending in an incomplete character (U+FFFD) stays open.
    """
    if _changes_greedy_choice(model):  # our loop takes the plain argmax: let generate apply them
        return generate_answers(model, tokenizer, kind, input_ids, attention_mask, budget)
    squashed = ["".join(key.split()) for key in keys]

    def still_open(row: int, ids: list[int]) -> bool:
        text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return "\ufffd" in text or squashed[row].startswith("".join(norm(text).split()))

    eos, pad = eos_id(tokenizer, model), pad_id(tokenizer, model)
    if kind == "causal":
        _check_left_padded(attention_mask)
    rows = greedy_ids(model, kind, input_ids, attention_mask, budget, eos,
                      decoder_start=_decoder_start_id(model, pad), still_open=still_open)
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def generate_answers(model, tokenizer, kind: str, input_ids, attention_mask,
                     max_new_tokens: int) -> list[str]:
    """The decoded answers of `generate_ids` (special tokens skipped)."""
    rows = generate_ids(model, tokenizer, kind, input_ids, attention_mask, max_new_tokens)
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------
# rank classification


def _gather_sum(log_probs: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Σ_t log_probs[:, t, ids[t]] for a [B, len(ids), V] tensor."""
    target = torch.tensor(ids, device=log_probs.device).expand(log_probs.shape[0], -1)
    return log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)


def _croppable(cache) -> bool:
    # only a cache that says a crop restores it exactly (transformers ≥ 5: `is_croppable`)
    return (cache is not None and hasattr(cache, "crop")
            and getattr(cache, "is_croppable", False) is True)


def _causal_scores(model, input_ids, attention_mask, label_ids, use_prompt_cache: bool):
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    positions = prompt_positions(attention_mask)
    scores = torch.empty(batch, len(label_ids), dtype=torch.float32, device=device)

    cache = None
    if use_prompt_cache:
        extra = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                    use_cache=True, **extra)
        cache = out.past_key_values
        first = out.logits[:, -1, :].float().log_softmax(-1)  # predicts each label's 1st token
        if not _croppable(cache):
            cache = None

    for k, ids in enumerate(label_ids):
        ids = list(ids)
        if cache is not None:
            score = first[:, ids[0]]
            if len(ids) > 1:
                # feed label tokens 0..m-2 after the cached prompt; their logits predict 1..m-1
                cont = torch.tensor(ids[:-1], device=device).expand(batch, -1)
                ones = torch.ones_like(cont, dtype=attention_mask.dtype)
                mask = torch.cat([attention_mask, ones], dim=1)
                pos = positions[:, -1:] + 1 + torch.arange(len(ids) - 1, device=device)
                out = model(input_ids=cont, attention_mask=mask, position_ids=pos,
                            past_key_values=cache, use_cache=True)
                score = score + _gather_sum(out.logits.float().log_softmax(-1), ids[1:])
                cache.crop(-(len(ids) - 1))  # negative: drop that many tokens, back to the prompt
                if cache.get_seq_length() != prompt_len:
                    raise RuntimeError("rank classification: the prompt cache did not crop back")
        else:
            # prompt + label tokens 0..m-2 in one pass; positions P-1 .. P+m-2 predict the label
            cont = torch.tensor(ids[:-1], device=device, dtype=input_ids.dtype).expand(batch, -1)
            seq = torch.cat([input_ids, cont], dim=1)
            mask = torch.cat([attention_mask, torch.ones_like(cont, dtype=attention_mask.dtype)], 1)
            out = model(input_ids=seq, attention_mask=mask, position_ids=prompt_positions(mask),
                        use_cache=False)
            log_probs = out.logits[:, prompt_len - 1:, :].float().log_softmax(-1)
            score = _gather_sum(log_probs, ids)
        scores[:, k] = score
    return scores


def _seq2seq_scores(model, input_ids, attention_mask, label_ids, pad_id: int):
    batch = input_ids.shape[0]
    device = input_ids.device
    encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask,
                                          return_dict=True)
    start = _decoder_start_id(model, pad_id)
    scores = torch.empty(batch, len(label_ids), dtype=torch.float32, device=device)
    for k, ids in enumerate(label_ids):
        ids = list(ids)
        decoder_input = torch.tensor([start] + ids[:-1], device=device).expand(batch, -1)
        out = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                    decoder_input_ids=decoder_input, use_cache=False)
        scores[:, k] = _gather_sum(out.logits.float().log_softmax(-1), ids)
    return scores


def label_scores(model, kind: str, input_ids, attention_mask, label_ids,
                 pad_id: int = 0, use_prompt_cache: bool = True) -> torch.Tensor:
    """[batch, n_labels] summed log-probabilities log p(label tokens + EOS | prompt), float32.

    Causal: the prompt (left-padded) runs once, its KV cache is reused for every label and cropped
    back after each (when the cache supports an exact crop; otherwise each label reruns prompt +
    label); position ids come from the attention mask so that left padding does not shift them.
    Seq2seq: the encoder runs once per batch, the decoder once per label with the label as
    teacher-forced input. `pad_id` is the decoder start fallback for seq2seq models.
    """
    check_kind(kind)
    if not label_ids or any(len(ids) == 0 for ids in label_ids):
        raise ValueError("rank classification needs a non-empty token list for every label")
    if kind == "causal":
        _check_left_padded(attention_mask)
        return _causal_scores(model, input_ids, attention_mask, label_ids, use_prompt_cache)
    return _seq2seq_scores(model, input_ids, attention_mask, label_ids, pad_id)


# ---------------------------------------------------------------------------------------------
# one task


def _enter(autocast):
    """A context manager from `autocast`: None, a context manager, or a callable returning one."""
    if autocast is None:
        return contextlib.nullcontext()
    if hasattr(autocast, "__enter__"):
        return autocast
    if callable(autocast):
        return autocast()
    raise TypeError(
        f"autocast must be a context manager or a callable returning one, got {autocast!r}"
    )


def _in_order(values: dict[int, str]) -> list[str]:
    return [values[i] for i in sorted(values)]


def _merge(parts: Sequence[tuple[dict, ...]]) -> tuple[dict, ...]:
    """Per-example outcomes of several processes as one: each field's dicts joined by example index."""
    merged: tuple[dict, ...] = tuple({} for _ in parts[0])
    for part in parts:
        for i in part[0]:
            if i in merged[0]:
                raise ValueError(f"evaluation batches repeat example index {i}")
        for into, values in zip(merged, part):
            into.update(values)
    return merged


def evaluate_task(
    model,
    tokenizer,
    kind: str,
    batches,
    label_ids: Sequence[Sequence[int]],
    mode: str = "generate",
    device=None,
    autocast=None,
    labels: Sequence[str] | None = None,
    *,
    max_new_tokens: int | None = None,
    answer_match: str = "no-punct",
    gather=None,
    stop: str = "eos",
) -> EvalResult:
    """Accuracy (percent) of `model` on the prompt `batches` of one task.

    `label_ids` are the task's label token ids (+ EOS), in the order of `labels` (the label words);
    without `labels` the words are decoded from `label_ids` and stripped (rank mode predicts the
    best label's word; both modes tell labelled references from unlabelled ones by them). Answers
    and references are compared after the normalisation of `answer_match` (module docstring);
    `max_new_tokens` is the generation budget (None: `generation_budget`). `device` defaults to the
    model's; `autocast` is an optional context manager (or a callable returning one, such as
    `accelerator.autocast`) entered around the whole evaluation. The model runs in eval mode under
    `torch.no_grad()` (not inference mode, whose tensors could leak into later training through
    module caches); its training flag is restored afterwards. Predictions and references come back
    sorted by `index`, i.e. in the original example order.

    `gather` (data-parallel evaluation, `jumplora.distributed.ScaleOut.gather`) takes this call's
    per-example outcomes and returns every process's: each process evaluates its share of the
    batches, and the accuracies are computed once from all examples (an index seen twice is refused).
    """
    check_kind(kind)
    if mode not in MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {MODES}")
    if stop not in STOPS:
        raise ValueError(f"unknown generation stop {stop!r}; expected one of {STOPS}")
    label_ids = [list(ids) for ids in label_ids]
    eos, pad = eos_id(tokenizer, model), pad_id(tokenizer, model)
    if labels is None:
        labels = [
            tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True).strip()
            for ids in label_ids
        ]
    labels = list(labels)
    if len(labels) != len(label_ids):
        raise ValueError(f"{len(labels)} label words for {len(label_ids)} label token lists")
    norm = answer_normalizer(answer_match)
    normalized_labels = [norm(label) for label in labels]
    label_set = {label for label in normalized_labels if label}
    device = torch.device(device) if device is not None else _model_device(model)
    generate, rank = mode in ("generate", "both"), mode in ("rank", "both")
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool)
                                       or not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be a positive integer or None, got {max_new_tokens!r}")
    budget = (max_new_tokens or generation_budget(label_ids)) if generate else 0

    generated: dict[int, str] = {}
    ranked: dict[int, str] = {}
    correct: dict[int, bool] = {}
    rank_hits: dict[int, bool] = {}
    references: dict[int, str] = {}

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _enter(autocast):
            for batch in batches:
                input_ids = batch["input_ids"].to(device)
                attention_mask = batch["attention_mask"].to(device)
                refs = list(batch["references"])
                index = [int(i) for i in batch["index"]]
                if not (len(refs) == len(index) == input_ids.shape[0]):
                    raise ValueError(
                        f"evaluation batch: {input_ids.shape[0]} prompts, {len(refs)} references, "
                        f"{len(index)} indices"
                    )
                for i, ref in zip(index, refs):
                    if i in references:
                        raise ValueError(f"evaluation batches repeat example index {i}")
                    references[i] = ref
                keys = [norm(ref) for ref in refs]
                if generate:
                    if stop == "decided":
                        answers = _decided_answers(model, tokenizer, kind, input_ids, attention_mask, budget,
                                                   keys, norm)
                    else:
                        answers = generate_answers(model, tokenizer, kind, input_ids, attention_mask,
                                                   budget)
                    for i, key, answer in zip(index, keys, answers):
                        generated[i] = answer
                        correct[i] = bool(key) and norm(answer) == key
                if rank:
                    scores = label_scores(model, kind, input_ids, attention_mask, label_ids,
                                          pad_id=pad)
                    best = scores.argmax(dim=-1).tolist()
                    for i, key, b in zip(index, keys, best):
                        ranked[i] = labels[b]
                        rank_hits[i] = key in label_set and normalized_labels[b] == key
                        if not generate:
                            correct[i] = rank_hits[i]
    finally:
        model.train(was_training)

    if gather is not None:
        references, generated, ranked, correct, rank_hits = _merge(
            gather((references, generated, ranked, correct, rank_hits)))
    labelled = {i: norm(ref) in label_set for i, ref in references.items()}
    n_labelled = sum(labelled.values())
    hits_gen = sum(correct.values()) if generate else 0
    hits_gen_labelled = sum(hit and labelled[i] for i, hit in correct.items()) if generate else 0
    hits_rank = hits_rank_labelled = sum(rank_hits.values())  # a ranked hit is always labelled
    n = len(references)
    if n == 0:
        raise ValueError("evaluation: no examples (the batches are empty)")
    def percent(hits, total):
        return 100.0 * hits / total if total else None

    accuracy_gen = percent(hits_gen, n) if generate else None
    accuracy_rank = percent(hits_rank, n) if rank else None
    gen_labelled = percent(hits_gen_labelled, n_labelled) if generate else None
    rank_labelled = percent(hits_rank_labelled, n_labelled) if rank else None
    return EvalResult(
        accuracy=accuracy_gen if generate else accuracy_rank,
        n=n,
        predictions=_in_order(generated if generate else ranked),
        references=_in_order(references),
        mode=mode,
        accuracy_rank=accuracy_rank,
        predictions_rank=_in_order(ranked) if rank else None,
        accuracy_labelled=gen_labelled if generate else rank_labelled,
        n_labelled=n_labelled,
        accuracy_rank_labelled=rank_labelled,
        correct=_in_order(correct),
    )
