"""The instruction prompts, in two styles, and their tokenization.

`prompt_style="authors"`, the JumpLoRA authors' prompt (their `make_base_prompt`)::

    Task Instruction: {instruction}
    Options: {label words joined by " | "}
    Text: {sentence}
    Answer:

where the instruction (instruction_config.json) ends with a newline, so an empty line follows it;
COPA has none ("Task Instruction: \nOptions: A | B\n..."). No task name appears. The whole prompt
is tokenized in one call and a too-long prompt is cut at its END (possibly the answer cue), as the
authors' ``tokenizer(prompt, truncation=True, max_length=L)``: a seq2seq input keeps the
tokenizer's special tokens (T5's final EOS) within the L tokens; a causal prompt gets no special
tokens (the authors' ``add_special_tokens=False``) and keeps its first L ids.

`prompt_style="olora"`, O-LoRA's prompt; it reads::

    Task: {group}
    Dataset: {task name}
    {instruction}Option: {label words joined by ", "}
    {sentence}
    Answer:

(the first two lines only with `header=True`; no instruction for COPA). The target is the label
word(s); a causal LM sees it after a space ("Answer: Good").

Tokenization of an olora prompt is done in three pieces (template before the sentence, sentence,
"\\nAnswer:") and the ids are concatenated, so that a too-long prompt can be cut inside the sentence
only. Every piece boundary is at a newline, where byte-level BPE and SentencePiece tokenizers split
anyway, so the result matches tokenizing the whole string in practice; training and evaluation share
this code, which is what matters.

Special tokens are those the tokenizer itself adds (found by encoding a probe with and without
them): a seq2seq encoder input gets them all (T5: a final EOS); a causal LM prompt keeps only the
leading ones (BOS where the tokenizer adds one, as Llama's does; nothing for GPT-2 or Qwen) and never
a trailing EOS, since the answer follows.
"""

from __future__ import annotations

from typing import Any

from jumplora.data.protocol import TaskData
from jumplora.data.tasks import TaskSpec
from jumplora.errors import ConfigError
from jumplora.tokens import check_kind, eos_id

ANSWER_CUE = "\nAnswer:"
PROMPT_STYLES = ("authors", "olora")


def _task_parts(task: TaskData | TaskSpec) -> tuple[TaskSpec, tuple[str, ...], str | None]:
    """(spec, labels, instruction): a TaskData's come from its files, a TaskSpec's from the registry."""
    if isinstance(task, TaskData):
        return task.spec, task.labels, task.instruction
    return task, task.labels, task.instruction


def _check_style(prompt_style: str) -> None:
    if prompt_style not in PROMPT_STYLES:
        raise ConfigError(f"unknown prompt style {prompt_style!r}; valid: {', '.join(PROMPT_STYLES)}")


def prompt_template(task: TaskData | TaskSpec, header: bool = True, *,
                    prompt_style: str = "olora") -> tuple[str, str]:
    """(text before the sentence, text after it). `header` applies to the olora style only."""
    _check_style(prompt_style)
    spec, labels, instruction = _task_parts(task)
    if prompt_style == "authors":
        return f"Task Instruction: {instruction or ''}\nOptions: {' | '.join(labels)}\nText: ", ANSWER_CUE
    before = f"Task: {spec.group}\nDataset: {spec.name}\n" if header else ""
    before += (instruction or "") + f"Option: {', '.join(labels)}\n"
    return before, ANSWER_CUE


def format_prompt(task: TaskData | TaskSpec, sentence: str, header: bool = True, *,
                  prompt_style: str = "olora") -> str:
    """The prompt text for one input sentence (see the module docstring)."""
    before, after = prompt_template(task, header, prompt_style=prompt_style)
    return before + sentence + after


def _encode(tokenizer: Any, text: str) -> list[int]:
    # verbose=False: a prompt longer than the model maximum is cut right after, not a problem to warn of
    return list(tokenizer.encode(text, add_special_tokens=False, verbose=False)) if text else []


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(ids the tokenizer puts before a text, ids it puts after), e.g. ([bos], []) or ([], [eos])."""
    probe = "Answer"
    bare = _encode(tokenizer, probe)
    full = list(tokenizer.encode(probe, add_special_tokens=True))
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []  # the tokenizer rewrites the text itself when adding specials: add none


class PromptEncoder:
    """Encodes prompts of one task for one tokenizer.

    olora style: the template's ids are computed once and the sentence is cut to fit
    `max_input_tokens`. authors style: the whole prompt is encoded and cut at its end, special
    tokens kept for seq2seq and absent for causal (module docstring).
    """

    def __init__(
        self,
        tokenizer: Any,
        task: TaskData | TaskSpec,
        kind: str | None = None,
        max_input_tokens: int | None = None,
        header: bool = True,
        *,
        prompt_style: str = "olora",
    ):
        if kind is not None:  # unset: the tokenizer's own special tokens, as for seq2seq
            check_kind(kind)
        _check_style(prompt_style)
        self.tokenizer = tokenizer
        self.task_name = _task_parts(task)[0].name
        self.max_input_tokens = max_input_tokens
        self.prompt_style = prompt_style
        self.template = prompt_template(task, header, prompt_style=prompt_style)
        if prompt_style == "authors":
            self.leading, self.trailing = ([], []) if kind == "causal" else special_tokens(tokenizer)
            fixed = len(self.leading) + len(self.trailing)
            if max_input_tokens is not None and max_input_tokens - fixed < 1:
                raise ConfigError(
                    f"task {self.task_name}: max_input_tokens={max_input_tokens} leaves no room for "
                    f"the prompt (the tokenizer's special tokens take {fixed})"
                )
            return
        leading, trailing = special_tokens(tokenizer)
        if kind == "causal":
            trailing = []
        before, after = self.template
        self.before = leading + _encode(tokenizer, before)
        self.after = _encode(tokenizer, after) + trailing
        fixed = len(self.before) + len(self.after)
        if max_input_tokens is not None and max_input_tokens - fixed < 1:
            raise ConfigError(
                f"task {self.task_name}: max_input_tokens={max_input_tokens} leaves no room for the "
                f"sentence (the prompt template takes {fixed} tokens)"
            )

    def encode(self, sentence: str) -> list[int]:
        if self.prompt_style == "authors":
            before, after = self.template
            ids = _encode(self.tokenizer, before + sentence + after)
            if self.max_input_tokens is not None:
                ids = ids[: self.max_input_tokens - len(self.leading) - len(self.trailing)]
            return self.leading + ids + self.trailing
        body = _encode(self.tokenizer, sentence)
        if self.max_input_tokens is not None:
            body = body[: self.max_input_tokens - len(self.before) - len(self.after)]
        return self.before + body + self.after


def encode_prompt(
    tokenizer: Any,
    task: TaskData | TaskSpec,
    sentence: str,
    max_input_tokens: int | None = None,
    header: bool = True,
    *,
    kind: str | None = None,
    prompt_style: str = "olora",
) -> list[int]:
    """Token ids of the prompt, at most `max_input_tokens`. olora style: the sentence's last tokens
    are cut (never the header, instruction, options or answer cue); `kind` "causal" drops trailing
    special tokens, "seq2seq" or None keeps the tokenizer's own. authors style: the prompt's last
    tokens are cut; "causal" has no special tokens, "seq2seq" or None the tokenizer's own (see the
    module docstring)."""
    return PromptEncoder(tokenizer, task, kind, max_input_tokens, header,
                         prompt_style=prompt_style).encode(sentence)


def encode_target(tokenizer: Any, label: str, kind: str,
                  max_target_tokens: int | None = None) -> list[int]:
    """Token ids the model must produce for `label`, ending with EOS; at most `max_target_tokens`
    of them, EOS kept last (the authors' ``tokenizer(text_target=label, max_length=8,
    truncation=True)`` for T5).

    seq2seq: the label's tokens. causal: the tokens the label gets right after the answer cue and a
    space, found by tokenizing "\\nAnswer: {label}" and removing the cue's ids (so a byte-level BPE
    gives "ĠGood" and a SentencePiece "▁Good", as in generation); if the cue's ids do not survive
    as a prefix, " {label}" tokenized alone.
    """
    check_kind(kind)
    if kind == "seq2seq":
        ids = _encode(tokenizer, label)
    else:
        cue = _encode(tokenizer, ANSWER_CUE)
        joined = _encode(tokenizer, f"{ANSWER_CUE} {label}")
        if joined[: len(cue)] == cue and len(joined) > len(cue):
            ids = joined[len(cue):]
        else:
            ids = _encode(tokenizer, " " + label)
    if max_target_tokens is not None:
        if isinstance(max_target_tokens, bool) or not isinstance(max_target_tokens, int) \
                or max_target_tokens < 1:
            raise ConfigError(f"max_target_tokens must be a positive integer, got {max_target_tokens!r}")
        ids = ids[: max_target_tokens - 1]
    return ids + [eos_id(tokenizer)]
