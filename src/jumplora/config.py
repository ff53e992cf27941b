"""The typed configuration of a run: every option, its default, its help and its role in one place.

`jumplora run` builds its flags from these fields, `--config run.yaml` sets any of them (keys are
the field names), and flags override the file. From Python: `RunConfig(method="jumplora", ...)`.
Defaults are the paper's (§4.4, `jumplora.defaults`) except where the field says why not.

Each field's `role` says what a change of it does, and the lists other modules compare runs by are
derived from it, so a new option is classified once, where it is declared:

- ``identity`` (method, order): what a run is; reports group runs by it;
- ``seed``: what a group averages over; the single-task reference of FWT must share it (the seed
  draws the data sample);
- ``scale``: the model, data, optimisation and evaluation: it changes every method's results, and
  the single-task reference must share it;
- ``method``: an option of the methods `applies` names (a predicate of `jumplora.method_names`);
- ``execution``: how the work is cut up (micro-batches, which cells are evaluated): it can change
  results, so a run never resumes under another value, but a single-task reference may differ;
- ``output``: where and how a run is written and shown; it never changes a result.

`RESULT_AFFECTING` (a run directory refuses to continue under other values), `SCALE_KEYS` (what the
FWT reference must share) and `VARIANT_KEYS` (what splits the runs of one method into separate rows
of a report) follow at the end of the module.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from jumplora import defaults, method_names
from jumplora.data import resolve_data_dir, resolve_order
from jumplora.ella_lambdas import PAPER_GRID, is_search, lambdas_for, parse_grid
from jumplora.errors import ConfigError
from jumplora.method_names import MethodName, canonical_method, parse_method
from jumplora.tokens import KINDS

IDENTITY, SEED, SCALE, METHOD, EXECUTION, OUTPUT = "identity", "seed", "scale", "method", "execution", "output"
ROLES = (IDENTITY, SEED, SCALE, METHOD, EXECUTION, OUTPUT)


def _opt(role: str, default, help: str, applies: Callable[[MethodName], bool] = method_names.every_method,
         **extra):
    """A field with its help text, its role (module docstring) and the methods it acts on."""
    assert role in ROLES, role
    return field(default=default, metadata={"help": help, "role": role, "applies": applies, **extra})


@dataclass
class RunConfig:
    # what to run
    method: str = _opt(IDENTITY, "jumplora", "CL method: inclora, ella, ewc, olora, lori, single (trained alone, "
                       "for FWT), mtl (multi-task), or jumplora+<method>; jumplora = jumplora+inclora")
    order: str = _opt(IDENTITY, "1", "task order: 1-6 (paper Table 6), a comma-separated task list, or a file; "
                      "with --continue-from, +TASK,... adds tasks to the run's order")
    seed: int = _opt(SEED, 42, "random seed (the paper averages 42, 43, 44)")
    model: str = _opt(SCALE, "smollm2-135m-instruct", "model: the offline default, a local folder or a Hugging "
                      "Face id")
    model_kind: str | None = _opt(SCALE, None, "seq2seq or causal; detected from the model config when unset")
    target_modules: list[str] | None = _opt(SCALE, None, "names of the linear layers to adapt; query and value "
                                            "projections of the architecture when unset", nargs="+")
    # data
    data_dir: str | None = _opt(OUTPUT, None, "benchmark root (<group>/<task>/{train,test,labels}.json); "
                                "else $JUMPLORA_DATA")  # where, not what: data.json's digests say what
    train_per_class: int | None = _opt(SCALE, None, "cap on training examples per class after the 80/20 split")
    val_per_class: int | None = _opt(SCALE, None, "cap on validation examples per class")
    test_per_class: int = _opt(SCALE, 500, "test examples per class (paper: 500)")
    split: str = _opt(SCALE, "auto", "auto: a task folder with dev.json is used as given (train/dev/test files, "
                      "no resampling; the caps above still cut them, stratified and seeded), else the paper's "
                      "protocol; protocol: always resample train+validation from train.json",
                      choices=("auto", "protocol"))
    unlabelled_test: str = _opt(SCALE, "count-wrong", "test records whose label is outside the label set (MNLI's "
                                "131 '-'): count them as wrong, as the authors' evaluation does, or drop them; "
                                "accuracy on the labelled records is reported as well",
                                choices=("count-wrong", "drop"))
    max_input_tokens: int | None = _opt(SCALE, 512, "prompt length cap in tokens (authors: 512 source tokens)")
    max_target_tokens: int | None = _opt(SCALE, 8, "target length cap in tokens, EOS included (authors: 8)")
    prompt_style: str = _opt(SCALE, "authors", "authors: 'Task Instruction: ...\\nOptions: a | b\\nText: "
                             "...\\nAnswer:', no task identity, prompt cut at its end; olora: O-LoRA's 'Option: "
                             "a, b' prompt, cut inside the sentence", choices=("authors", "olora"))
    prompt_header: bool = _opt(SCALE, False, "olora prompts only: start with the Task:/Dataset: header naming the "
                               "task")
    batching: str = _opt(SCALE, "random", "random: each optimiser step takes a uniformly shuffled batch (the "
                         "authors' Trainer), sorted by length into micro-batches; length: batches of similar "
                         "length (less padding, steps correlated by length)", choices=("random", "length"))
    # adapter and JumpLoRA
    rank: int = _opt(SCALE, defaults.RANK, "LoRA rank r")
    alpha: float = _opt(SCALE, defaults.ALPHA, "LoRA alpha; the update is scaled by alpha/rank")
    lora_dropout: float | None = _opt(SCALE, None, "dropout on the input of the low-rank path, training only; "
                                      "unset: the authors' per method (0.1 for plain LoRA, 0 for JumpLoRA)")
    threshold_mode: str = _opt(METHOD, "global", "JumpLoRA threshold: one per model (global) or per transformer "
                               "block (local); table1: the configuration of the paper's Table 1 for the method "
                               "and benchmark", applies=method_names.gated, choices=("global", "local", "table1"),
                               aliases=("threshold",))
    bandwidth: float = _opt(METHOD, defaults.BANDWIDTH, "JumpReLU kernel bandwidth epsilon",
                            applies=method_names.gated)
    threshold_grad: str = _opt(METHOD, "authors", "threshold pseudo-gradient: authors (eq. 5 literally, two "
                               "one-sided kernels, mean over each matrix's entries) or abs-sum (one kernel on |dW|, "
                               "summed)", applies=method_names.gated, choices=("authors", "abs-sum"))
    threshold_init: str = _opt(METHOD, "authors", "tau at S_start: authors (kthvalue: the (k+1)-th smallest |dW| "
                               "for a global threshold, the k-th per block) or midpoint (halfway between "
                               "neighbours)", applies=method_names.gated, choices=("authors", "midpoint"))
    s_start: float = _opt(METHOD, defaults.S_START, "first interpolation step S_start: a fraction (<=1.0, float) "
                          "of the task's optimiser steps, or an absolute step (int)",
                          applies=method_names.uses_schedule)
    s_final: float = _opt(METHOD, defaults.S_FINAL, "final interpolation step S_final, as S_start",
                          applies=method_names.gated)
    schedule_rounding: str = _opt(METHOD, "floor", "fraction -> step: floor (the authors' int()) or round",
                                  applies=method_names.uses_schedule, choices=("floor", "round"))
    # method options
    ella_lambda: str = _opt(METHOD, "paper", "ELLA lambda: 'paper' (Table 7 of the paper for orders 1-6), "
                            "'paper-table8' (Table 8, JumpLoRA+ELLA's ablation, by threshold and penalty), "
                            "'search' (at each task, the value of --ella-lambda-grid with the best validation "
                            "accuracy over the tasks so far), one number, or a comma-separated list with one value "
                            "per task", applies=method_names.ella)
    ella_lambda_grid: str = _opt(METHOD, PAPER_GRID, "the lambda values --ella-lambda search tries at each task, "
                                 "comma-separated (paper Appendix A.2)", applies=method_names.ella)
    ella_penalty: str = _opt(METHOD, "sparse", "JumpLoRA+ELLA penalty on the sparse update (Algorithm 1, Table 1) "
                             "or the interpolated one (paper section 4.6)", applies=method_names.gated_ella,
                             choices=("sparse", "interp"))
    ella_scale: str = _opt(METHOD, "authors", "ELLA convention: authors (penalise beta*dW against W_past of "
                           "scaled updates, divided by the number of matrices with a past; Table 7's lambda) or "
                           "unscaled-sum (dW and W_past unscaled, summed over matrices)", applies=method_names.ella,
                           choices=("authors", "unscaled-sum"))
    ella_threshold_grad: bool = _opt(METHOD, False, "let the ELLA penalty push tau through the JumpReLU "
                                     "pseudo-gradient (authors: no, their mask is a hard comparison)",
                                     applies=method_names.gated_ella)
    ewc_lambda: float = _opt(METHOD, 5000.0, "EWC penalty strength", applies=method_names.ewc)
    ewc_fisher_batches: int = _opt(METHOD, 16, "training micro-batches used to estimate EWC's Fisher after each "
                                   "task", applies=method_names.ewc)
    olora_lambda: float = _opt(METHOD, 0.5, "O-LoRA orthogonality weight lambda_1", applies=method_names.olora)
    olora_l2: float = _opt(METHOD, 0.0, "O-LoRA L2 weight lambda_2 on the new adapter", applies=method_names.olora)
    lori_sparsity: float = _opt(METHOD, 0.9, "LoRI: fraction of B's entries masked after calibration",
                                applies=method_names.lori)
    # optimisation
    learning_rate: float = _opt(SCALE, 1e-3, "AdamW learning rate (constant after warm-up)")
    warmup_steps: int = _opt(SCALE, 0, "linear warm-up steps at the start of each task")
    weight_decay: float = _opt(SCALE, 0.0, "AdamW weight decay")
    batch_size: int = _opt(SCALE, 32, "global batch size (examples per optimiser step)")
    micro_batch_size: int = _opt(EXECUTION, 8, "examples per forward pass; gradient accumulation reaches "
                                 "batch_size")
    epochs: int = _opt(SCALE, 1, "epochs per task (paper: 1)")
    max_steps_per_task: int | None = _opt(SCALE, None, "stop each task after this many optimiser steps "
                                          "(debugging)")
    max_grad_norm: float = _opt(SCALE, 1.0, "clip the gradient norm of A, B and tau before each step (Hugging "
                                "Face Trainer default, as the authors train); 0 disables")
    loss_mean: str = _opt(SCALE, "step", "task loss averaged over the target tokens of the whole optimiser step "
                          "(as one batch of batch_size, the authors') or per micro-batch",
                          choices=("step", "micro-batch"))
    # speed knobs, equal results up to float rounding (tests/test_speed_paths.py): a run may resume with
    # another value, and runs that differ only in them are the same variant
    frozen_weights: str = _opt(OUTPUT, "compute-dtype", "frozen linear weights during training and evaluation: "
                               "a copy in the autocast dtype made once per task (compute-dtype) or fp32, cast by "
                               "autocast at every call (fp32); the same rounded weights either way",
                               choices=("compute-dtype", "fp32"))
    frozen_masters: str = _opt(OUTPUT, "disk", "with frozen_weights: compute-dtype on the CPU, where the fp32 "
                               "originals of the frozen linears no adapter wraps wait while their copies are in "
                               "use: an unlinked temporary file, read back bit for bit at the end of training or "
                               "evaluation (disk: 372 MB less for SmolLM2-135M), or in memory",
                               choices=("disk", "memory"))
    fold: str = _opt(OUTPUT, "per-step", "JumpLoRA's gated weight W + beta*dW_interp: folded once per optimiser "
                     "step, its micro-batch gradients summed and sent back once (per-step), or per micro-batch",
                     choices=("per-step", "per-micro-batch"))
    max_micro_batch_tokens: int | None = _opt(OUTPUT, 2048, "cut a training micro-batch whose padded tokens "
                                              "(examples x longest) exceed this into smaller ones of the same step "
                                              "(under the step's token-mean loss, where the pieces give the same "
                                              "loss; LoRA dropout then draws its masks per piece); bounds the "
                                              "memory of the longest texts; none: never cut")
    compile: str = _opt(OUTPUT, "none", "training: each transformer block through torch.compile for element-wise "
                        "fusion (blocks; eager with a warning where the compiler does not work) or eager (none); "
                        "see benchmarks/step_time.md for what it costs and saves", choices=("none", "blocks"))
    generation_stop: str = _opt(OUTPUT, "decided", "greedy evaluation: stop each row once its exact-match outcome "
                                "is decided (jumplora.greedy; the same accuracy, wrong answers kept only up to where "
                                "they went wrong) or at EOS / the budget (model.generate)", choices=("decided", "eos"))
    precision: str = _opt(SCALE, "bf16", "mixed precision for training and evaluation: bf16 autocast (also on "
                          "CPU), fp16 (GPU) or fp32", choices=("bf16", "fp16", "fp32"))
    # evaluation
    eval_mode: str = _opt(SCALE, "generate", "greedy generation with exact match, rank classification of the "
                          "label words, or both", choices=("generate", "rank", "both"))
    eval_scope: str = _opt(EXECUTION, "seen", "after each task evaluate the tasks learned so far, or every task "
                           "of the order", choices=("seen", "all"))
    # a memory knob: a run may resume with another one (as before roles existed)
    eval_batch_size: int = _opt(OUTPUT, 32, "examples per evaluation batch")
    max_new_tokens: int | None = _opt(SCALE, 8, "greedy generation budget (authors: 8); unset: the longest label "
                                      "+ EOS")
    answer_match: str = _opt(SCALE, "authors", "exact match after lower-casing and collapsing whitespace "
                             "(authors), or also removing punctuation (no-punct)", choices=("authors", "no-punct"))
    single_dir: str | None = _opt(OUTPUT, None, "a finished 'single' run for FWT; else one with the same model, "
                                  "scale and seed is looked for next to the output directory")
    # where an extension came from; its own results are its config's, checked against the source's
    continue_from: str | None = _opt(OUTPUT, None, "a finished run directory to extend: train the tasks --order "
                                     "adds (+TASK,...) on its final model and method state; every other option is "
                                     "the run's (default output: RUN+TASK+...)")
    # output
    output_dir: str | None = _opt(OUTPUT, None, "run directory; default runs/<method>-order<order>-seed<seed>")
    log: str = _opt(OUTPUT, "none", "also log scalars to TensorBoard", choices=("none", "tensorboard"))
    progress: bool = _opt(OUTPUT, True, "show progress bars")

    def __post_init__(self):
        # every value is checked here, where the configuration is built: a bad one fails in one line
        # before any data or model is loaded, not minutes into the run
        self.method = canonical_method(self.method)  # "JumpLoRA" is stored as "jumplora"
        for name, hint in _field_types().items():
            setattr(self, name, _typed(name, hint, getattr(self, name)))
        for name in [f.name for f in dataclasses.fields(self) if "choices" in f.metadata]:
            choices = self.field_meta(name).get("choices")
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        for name, (accepts, what) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not accepts(value):
                raise ConfigError(f"{name} must be {what}, got {value!r}")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}"
            )
        if str(self.order).strip().startswith("+"):
            raise ConfigError(f"order {self.order!r} adds tasks to a finished run: give the run with continue_from "
                              "(--continue-from RUN; from Python jumplora.extend.extend_run)")
        resolve_order(self.order)  # an unknown task or a missing order file fails here
        if self.threshold_mode == "table1":  # before the method options: Table 8's λ depend on it
            self.threshold_mode = table1_threshold(self.method, self.order)
        self._check_method_options()

    def _check_method_options(self) -> None:
        if self.method_name.strategy == "ella":
            parse_grid(self.ella_lambda_grid)
            if is_search(self.ella_lambda):
                if self.val_per_class == 0:  # the search selects on validation data, never on test data
                    raise ConfigError("ella_lambda 'search' selects by validation accuracy: val_per_class must "
                                      "not be 0")
                return
            lambdas = self.ella_lambdas()
            if not all(math.isfinite(v) and v >= 0 for v in lambdas):
                raise ConfigError(f"ella_lambda must be 'paper' or numbers >= 0, got {self.ella_lambda!r}")

    def ella_lambdas(self) -> list[float]:
        """ELLA's λ per task of the order (`jumplora.ella_lambdas.lambdas_for`; not for 'search')."""
        return lambdas_for(self.ella_lambda, self.order, len(self.task_list), threshold_mode=self.threshold_mode,
                           penalty=self.ella_penalty, gated=self.gated)

    # derived -----------------------------------------------------------------------------------
    @property
    def method_name(self) -> MethodName:
        return parse_method(self.method)

    @property
    def gated(self) -> bool:
        return self.method_name.gated

    @property
    def task_list(self) -> list[str]:
        return resolve_order(self.order)

    @property
    def run_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        order = self.order if str(self.order).isdigit() else "custom"
        return Path("runs") / f"{self.method}-order{order}-seed{self.seed}"

    @property
    def resolved_data_dir(self) -> Path:
        return resolve_data_dir(self.data_dir)

    # (de)serialisation ---------------------------------------------------------------------------
    @classmethod
    def field_meta(cls, name: str) -> dict[str, Any]:
        return dict(next(f for f in dataclasses.fields(cls) if f.name == name).metadata)

    @classmethod
    def field_default(cls, name: str) -> Any:
        return next(f for f in dataclasses.fields(cls) if f.name == name).default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> "RunConfig":
        values = current_names(values, source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
        if "order" in values:
            values["order"] = str(values["order"])
        if isinstance(values.get("target_modules"), str):
            values["target_modules"] = [t.strip() for t in values["target_modules"].split(",") if t.strip()]
        return cls(**values)


# -- checking values ---------------------------------------------------------------------------------
# Each option's type comes from its annotation; a YAML string or a command-line string of the right
# kind is converted ("1e-3" is a string to YAML, a number here), anything else is refused naming the
# option. The ranges below then say which values make a run.

STEP_FIELDS = ("s_start", "s_final")  # a fraction (float) or an absolute step (int)


@functools.cache
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig)}


def _typed(name: str, hint: Any, value: Any) -> Any:
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        value = None  # `--max-input-tokens none` on the command line, as `null` in YAML
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must be set, got nothing (null)")
    if name in STEP_FIELDS:
        return _step(name, value)
    if base is bool:
        return _as_bool(name, value)
    if base is int:
        return _as_int(name, value)
    if base is float:
        return _as_float(name, value)
    if base is str:
        return _as_str(name, value)
    return _as_names(name, value)  # list[str]


_INTEGER = re.compile(r"[+-]?\d+")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 32.0 from YAML
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{name} must be a whole number, got {value!r}")


def _as_float(name: str, value: Any) -> float:
    number = None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None:
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number


def _as_str(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # order: 2, ella_lambda: 100 in YAML
    raise ConfigError(f"{name} must be a string, got {value!r}")


def _as_names(name: str, value: Any) -> list[str]:
    names = [t.strip() for t in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{name} must be a list of names, got {value!r}")
    if not names:
        raise ConfigError(f"{name} must name at least one module (or be left unset), got {value!r}")
    return [n.strip() for n in names]


def _step(name: str, value: Any) -> float | int:
    """S_start / S_final: a fraction of the task's steps in [0, 1] (float) or a step number (int);
    a string as on the command line ('0.2' is a fraction, '50' a step), 50.0 from YAML is step 50."""
    if isinstance(value, str):
        text = value.strip()
        value = _as_float(name, text) if any(c in text for c in ".eE") else _as_int(name, text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a fraction in [0, 1] or a step number, got {value!r}")
    if isinstance(value, float) and value.is_integer() and value > 1:
        value = int(value)
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} as a fraction of the task's steps must lie in [0, 1], got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{name} as a step number must be >= 0, got {value!r}")
    return value


def _at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_BELOW_ONE = (lambda v: 0 <= v < 1, "in [0, 1)")

# option -> (accepts, what it must be); None always passes (an unset optional value)
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _at_least(0),
    "train_per_class": _at_least(1),  # 0 would train nothing
    "val_per_class": _at_least(0),
    "test_per_class": _at_least(1),
    "max_input_tokens": _at_least(1),
    "max_micro_batch_tokens": _at_least(1),
    "max_target_tokens": _at_least(1),
    "rank": _at_least(1),
    "alpha": _POSITIVE,
    "lora_dropout": _BELOW_ONE,
    "bandwidth": _POSITIVE,
    "ewc_lambda": _NON_NEGATIVE,
    "ewc_fisher_batches": _at_least(1),
    "olora_lambda": _NON_NEGATIVE,
    "olora_l2": _NON_NEGATIVE,
    "lori_sparsity": _BELOW_ONE,
    "learning_rate": _POSITIVE,
    "warmup_steps": _at_least(0),
    "weight_decay": _NON_NEGATIVE,
    "batch_size": _at_least(1),
    "micro_batch_size": _at_least(1),
    "epochs": _at_least(1),  # 0 would train nothing and report a finished run
    "max_steps_per_task": _at_least(1),
    "max_grad_norm": _NON_NEGATIVE,  # 0 disables clipping
    "eval_batch_size": _at_least(1),
    "max_new_tokens": _at_least(1),
    "model_kind": (lambda v: v in KINDS, " or ".join(KINDS)),
}


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def table1_threshold(method: str, order: str) -> str:
    """The threshold of the paper's Table 1, which reports each benchmark's best configuration of Table 3:
    JumpLoRA+IncLoRA local on Standard CL (orders 1-3), global on Long Sequence (4-6); JumpLoRA+ELLA
    global on SC, local on LS. Other methods and custom orders: global (the authors' code default)."""
    benchmark = {"1": "SC", "2": "SC", "3": "SC", "4": "LS", "5": "LS", "6": "LS"}.get(str(order))
    table = {("inclora", "SC"): "local", ("inclora", "LS"): "global",
             ("ella", "SC"): "global", ("ella", "LS"): "local"}
    return table.get((parse_method(method).strategy, benchmark), "global")


# Options renamed since runs were first written: old name -> field. A YAML file or a saved config.yaml
# may use the old name (the `--threshold` flag is kept as well, see `aliases`).
RENAMED: dict[str, str] = {
    alias: f.name for f in dataclasses.fields(RunConfig) for alias in f.metadata.get("aliases", ())
}


def current_names(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with renamed options under their current names; both names at once is refused."""
    values = dict(values)
    for old, new in RENAMED.items():
        if old in values:
            if new in values:
                raise ConfigError(f"{source}: {old} and {new} are one option; give {new} only")
            values[new] = values.pop(old)
    return values


# The values a run directory written before an option existed was run with. A saved config.yaml that
# lacks a key is read with these (not today's defaults), so old runs resume, compare and report as run.
LEGACY_VALUES: dict[str, Any] = {
    "split": "protocol",
    "unlabelled_test": "drop",
    "max_input_tokens": None,
    "max_target_tokens": None,
    "prompt_style": "olora",
    "prompt_header": True,
    "batching": "length",
    "lora_dropout": 0.0,
    "threshold_grad": "abs-sum",
    "threshold_init": "midpoint",
    "schedule_rounding": "round",
    "ella_scale": "unscaled-sum",
    "ella_threshold_grad": True,
    "max_grad_norm": 0.0,
    "loss_mean": "micro-batch",
    "max_new_tokens": None,
    "answer_match": "no-punct",
    "ella_lambda_grid": PAPER_GRID,  # no run searched λ before the grid existed: any value ran the same
}


def with_legacy_values(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration as it was run: renamed options under their current names (`RENAMED`),
    and LEGACY_VALUES for the options it lacks."""
    current = current_names(saved, "config.yaml")
    return {**{k: v for k, v in LEGACY_VALUES.items() if k not in current}, **current}


def _with_role(*roles: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["role"] in roles)


# options that change results: a run directory refuses to continue under different values
RESULT_AFFECTING = _with_role(IDENTITY, SEED, SCALE, METHOD, EXECUTION)
# what the `single` run giving FWT's a_0,i must share with the run (`jumplora.rundir.find_single_run`)
SCALE_KEYS = _with_role(SCALE, SEED)
# what splits one method's runs into separate rows of a report (`jumplora.analysis.groups`)
VARIANT_KEYS = _with_role(SCALE, METHOD, EXECUTION)


def applies(key: str, method: MethodName) -> bool:
    """Whether option `key` acts on `method` (its `applies` metadata): a setting of another method's
    option does not make two runs different."""
    return RunConfig.field_meta(key)["applies"](method)
