"""Greedy decoding for evaluation: a KV-cached loop that stops each row once its answer is decided.

`model.generate` decodes until every row has produced EOS or the budget is spent, so one row that
runs on keeps all 32 rows of a batch decoding for the whole budget (8 tokens). An exact-match
evaluation does not need those tokens: once a row's decoded text (normalised as the comparison
normalises it) is no longer a prefix of its reference, the row is wrong whatever it generates next.
`greedy_ids` takes an optional `still_open(row, ids)`; a row for which it returns False stops
there. The loop ends when no row is open. The tokens a row does generate are the ones
`model.generate(do_sample=False, num_beams=1)` gives (tests/test_evaluate.py compares them): the same
forward calls, prompt positions counted over the real tokens, the cache extended one token a step.

Without `still_open` every row runs to EOS or the budget, as `generate` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from jumplora.tokens import check_kind


def accepts(model, name: str) -> bool:
    """Whether `model.forward` takes the keyword `name` (e.g. logits_to_keep, position_ids)."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counted over the real tokens only (left padding gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def greedy_ids(model, kind: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
               eos: int, decoder_start: int | None = None,
               still_open: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Each row's new token ids, up to (without) its first EOS, at most `max_new_tokens`; a row stops
    early where `still_open(row, ids)` turns False. Causal prompts must be left-padded."""
    check_kind(kind)
    rows: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    open_rows = set(range(input_ids.shape[0]))
    if kind == "causal":
        mask = attention_mask
        positions = prompt_positions(mask)
        last_only = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_only)
        last = positions[:, -1:]
    else:
        encoder = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        start = torch.full((input_ids.shape[0], 1), decoder_start, dtype=input_ids.dtype, device=input_ids.device)
        out = model(encoder_outputs=encoder, attention_mask=attention_mask, decoder_input_ids=start, use_cache=True)
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(dim=-1)
        for row, value in enumerate(token.tolist()):
            if row not in open_rows:
                continue
            if value == eos:
                open_rows.discard(row)
                continue
            rows[row].append(value)
            if still_open is not None and not still_open(row, rows[row]):
                open_rows.discard(row)
        if not open_rows or step == max_new_tokens - 1:
            break
        cache = out.past_key_values
        if kind == "causal":
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            last = last + 1
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=last, past_key_values=cache,
                        use_cache=True)
        else:
            out = model(encoder_outputs=encoder, attention_mask=attention_mask, decoder_input_ids=token[:, None],
                        past_key_values=cache, use_cache=True)
    return rows
