"""Data-parallel training and evaluation (issue 14): `accelerate launch` on two CPU processes (gloo)
gives what one process gives, and a two-process run killed with SIGKILL resumes to the same result.

The two-process runs go through the user-facing path, `accelerate launch --config_file
configs/accelerate/cpu-2proc.yaml -m jumplora run ...` (MULTI_GPU: accelerate starts torchrun, and
without a GPU each process joins a gloo group; its `--cpu` flag alone starts one process unless
mpirun is installed). The first tests check the pieces in one process: each step's
examples are shared out without loss or duplication, and the per-process losses and gradients
add up to the one-process ones.

Tolerance: fp32, tiny random models. The two runs add the same numbers in another order and cut the
steps into other micro-batches (other padding widths), so they differ by float rounding (~1e-7).
Without a gate that is what remains: the T5 run (plain LoRA + ELLA) agrees to a relative 1e-5 in
every step's loss and 1e-5 absolute in every merged update. JumpLoRA's hard gate amplifies it (an
entry of ΔW on the other side of τ changes by β·τ at once, and the next steps follow): the Llama
run (JumpLoRA+EWC) agrees to 1e-6 in the first task's update, to a relative 1e-3 in every loss
(measured: <= 4e-5) and 1e-4 in τ, and to 1 point in each task's sparsity. One process with
micro-batches of 1 instead of 2 (the same gradient, summed otherwise) differs from itself as much:
up to 1e-3 in the losses (docs/scale-out.md). The accuracy matrices and every test example's
outcome are equal exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from jumplora.config import RunConfig
from jumplora.data import load_task
from jumplora.data.batches import label_token_ids, make_eval_batches, make_train_batches
from jumplora.distributed import ScaleOut
from jumplora.evaluate import evaluate_task
from jumplora.models import load_model
from jumplora.rundir import FollowerRunDirectory, RunDirectory
from jumplora.testing import save_tiny, tiny_llama, tiny_t5
from jumplora.train import data_protocol, run_continual, task_loss
from jumplora.updates import TaskUpdate

PROCESS_KEYS = ("wall_time_s", "peak_memory_mb", "cpu_time_s")  # a task record's figures of the process that ran it

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "CL_Benchmark"
BUILD = {"causal": tiny_llama, "seq2seq": tiny_t5}

# three tasks; CB's 9 training examples make steps of 4, 4 and 1 (the last leaves process 1 without
# examples), 9 CB test examples in batches of 2 make 5 batches (3 on process 0, 2 on process 1)
OPTIONS = dict(
    order="cb,copa,wic", data_dir=str(DATA), seed=42, train_per_class=3, val_per_class=1, test_per_class=3,
    max_input_tokens=200, batch_size=4, micro_batch_size=2, learning_rate=5e-3, eval_batch_size=2,
    eval_mode="rank", precision="fp32", progress=False,
)
GATED = dict(loss_rtol=1e-3, update_atol=None)
UNGATED = dict(loss_rtol=1e-5, update_atol=1e-5)


def options(kind: str, model_dir: Path, output_dir: Path) -> dict:
    # Llama: JumpLoRA+EWC (τ at S_start, the gate, the Fisher reduced across processes, a penalty term);
    # T5: ELLA on plain LoRA without dropout (W_past, a penalty; no gate: the tight comparison)
    method = {"method": "jumplora+ewc"} if kind == "causal" else {"method": "ella", "lora_dropout": 0.0}
    return {**OPTIONS, **method, "ella_lambda": "100", "model": str(model_dir), "output_dir": str(output_dir)}


def flags(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def launch_command(values: dict) -> list[str]:
    """`accelerate launch --config_file configs/accelerate/cpu-2proc.yaml -m jumplora run ...`"""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"), "-m", "jumplora", "run", *flags(values)]


def launch_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def launch(values: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(launch_command(values), env=launch_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def one_process(values: dict, model_dir: Path):
    return run_continual(RunConfig(**values), loaded=load_model(model_dir, progress=False))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "tasks").glob("*.json"))]


def losses(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]


def metrics(run_dir: Path) -> dict:
    values = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in values.items() if k not in ("wall_time_s", "peak_memory_mb", "cpu_time_s")}


def assert_same_run(two: Path, one: Path, loss_rtol: float, update_atol: float | None) -> None:
    """The two-process run directory holds the one-process run's results (module docstring);
    `update_atol` None: a gated run, whose updates agree tightly only in the first task."""
    for a, b in zip(records(two), records(one), strict=True):
        assert a["accuracy"] == b["accuracy"], a["task"]
        assert a["correct"] == b["correct"], a["task"]  # every example once, in its place
        assert a["steps"] == b["steps"] and a["s_start_step"] == b["s_start_step"]
        assert a["sparsity"] == pytest.approx(b["sparsity"], abs=0.01)
        assert a["thresholds"] == pytest.approx(b["thresholds"], rel=1e-4)
    assert (two / "accuracy_matrix.csv").read_text() == (one / "accuracy_matrix.csv").read_text()
    steps_two, steps_one = losses(two), losses(one)
    keys = [[(r["task"], r["step"], sorted(r)) for r in steps] for steps in (steps_two, steps_one)]
    assert keys[0] == keys[1]
    for a, b in zip(steps_two, steps_one):
        for key in ("loss", "task_loss", "ewc_penalty", "ella_penalty"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=loss_rtol), (a["task"], a["step"], key)
        assert a["gamma"] == b["gamma"] and a["lr"] == b["lr"]
    assert any("ewc_penalty" in r or "ella_penalty" in r for r in steps_one)  # the method's term took part
    updates = list(zip(sorted((two / "updates").iterdir()), sorted((one / "updates").iterdir()), strict=True))
    for index, (a, b) in enumerate(updates):
        if update_atol is None and index > 0:
            continue
        update_a, update_b = TaskUpdate.load(a), TaskUpdate.load(b)
        assert update_a.modules.keys() == update_b.modules.keys()
        for name, module in update_b.modules.items():
            torch.testing.assert_close(update_a.modules[name].dense(), module.dense(), rtol=0,
                                       atol=update_atol or 1e-6)
    assert not [p for p in two.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny(build(seed=0), root / kind) for kind, build in BUILD.items()}


@pytest.fixture(scope="module")
def llama_two_process_run(tiny_models, tmp_path_factory):
    """The uninterrupted two-process Llama run, shared by the equality and the kill tests."""
    out = tmp_path_factory.mktemp("llama") / "two"
    launch(options("causal", tiny_models["causal"], out))
    return out


# -- the pieces, in one process ---------------------------------------------------------------------------
def _cb_steps(kind: str, loaded):
    config = RunConfig(**options(kind, Path("unused"), Path("unused")))
    task = load_task("CB", DATA, data_protocol(config))
    batches = make_train_batches(task.train, task, loaded.tokenizer, kind, 2, 42, 200, header=False,
                                 prompt_style="authors", max_target_tokens=8, batching="random", step_batch_size=4)
    steps: dict[int, list[dict]] = {}
    for batch in batches:
        steps.setdefault(batch["step"], []).append(batch)
    return list(steps.values())


def _examples(batches: list[dict]) -> list[tuple]:
    return sorted((tuple(b["input_ids"][i][b["attention_mask"][i].bool()].tolist()),
                   tuple(b["labels"][i][b["labels"][i] != -100].tolist()))
                  for b in batches for i in range(b["input_ids"].shape[0]))


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_each_step_is_shared_out_without_losing_or_repeating_an_example(kind):
    steps = _cb_steps(kind, BUILD[kind](seed=0))
    assert [sum(b["input_ids"].shape[0] for b in step) for step in steps] == [4, 4, 1]
    for step in steps:
        one = ScaleOut().step_share(step, 2)
        assert one.batches == step and one.micro_batches == len(step)
        shares = [ScaleOut(rank, 2).step_share(step, 2) for rank in range(2)]
        assert _examples([b for s in shares for b in s.batches]) == _examples(step)
        assert {s.target_tokens for s in shares} == {sum(b["target_tokens"] for b in step)}
        assert {s.micro_batches for s in shares} == {sum(len(s.batches) for s in shares)}
        assert all(b["input_ids"].shape[0] <= 2 for s in shares for b in s.batches)
        assert all(b["target_tokens"] == int((b["labels"] != -100).sum()) for s in shares for b in s.batches)
    last = [ScaleOut(rank, 2).step_share(steps[-1], 2) for rank in range(2)]
    assert [len(s.batches) for s in last] == [1, 0] and not last[1].every_process_has_examples


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_the_processes_losses_and_gradients_add_up_to_the_one_process_step(kind):
    """Σ over processes of each share's loss (scaled as train_task scales it) and its gradient is the
    one-process step's: the all-reduce of their sums gives the global token mean."""
    loaded = BUILD[kind](seed=0)
    model = loaded.model
    weight = model.get_output_embeddings().weight  # a frozen matrix made trainable: its gradient is compared
    weight.requires_grad_(True)
    for step in _cb_steps(kind, loaded)[:2]:
        def step_loss(share):
            weight.grad = None
            total = 0.0
            for batch in share.batches:
                loss = task_loss(model, batch, kind, reduction="sum") / share.target_tokens
                loss.backward()
                total += loss.item()
            return total, (weight.grad.clone() if weight.grad is not None else torch.zeros_like(weight))

        whole, grad = step_loss(ScaleOut().step_share(step, 2))
        parts = [step_loss(ScaleOut(rank, 2).step_share(step, 2)) for rank in range(2)]
        assert sum(p[0] for p in parts) == pytest.approx(whole, rel=1e-6)
        torch.testing.assert_close(parts[0][1] + parts[1][1], grad, rtol=1e-5, atol=1e-7)
        assert not torch.allclose(parts[0][1], grad)  # a share alone is not the step


class Captured(Exception):
    pass


def _outcomes(model, tokenizer, batches, label_ids, **common):
    """The per-example outcomes one process hands to the gather (captured, not evaluated further)."""
    box = []

    def capture(own):
        box.append(own)
        raise Captured

    with pytest.raises(Captured):
        evaluate_task(model, tokenizer, "causal", batches, label_ids, gather=capture, **common)
    return box[0]


@pytest.mark.parametrize("count", [9, 2])
def test_sharded_evaluation_gathers_every_example_once(count):
    """9 examples in batches of 2: 3 batches on process 0, 2 on process 1; 2 examples: process 1 has none."""
    loaded = tiny_llama(seed=0)
    config = RunConfig(**options("causal", Path("unused"), Path("unused")))
    task = load_task("CB", DATA, data_protocol(config))
    batches = make_eval_batches(task.test[:count], task, loaded.tokenizer, "causal", 2, 200, header=False,
                                prompt_style="authors")
    label_ids = label_token_ids(task, loaded.tokenizer, "causal", 8)
    common = dict(mode="both", labels=task.labels, answer_match="authors", max_new_tokens=3)
    whole = evaluate_task(loaded.model, loaded.tokenizer, "causal", batches, label_ids, **common)
    shares = [ScaleOut(rank, 2).shard(batches) for rank in range(2)]
    assert [len(s) for s in shares] == ([3, 2] if count == 9 else [1, 0])
    theirs = _outcomes(loaded.model, loaded.tokenizer, shares[1], label_ids, **common)
    merged = evaluate_task(loaded.model, loaded.tokenizer, "causal", shares[0], label_ids,
                           gather=lambda own: [own, theirs], **common)
    assert merged == whole and merged.n == count
    with pytest.raises(ValueError, match="repeat example index"):
        evaluate_task(loaded.model, loaded.tokenizer, "causal", batches, label_ids,
                      gather=lambda own: [own, own], **common)


def test_a_follower_process_writes_nothing_in_the_run_directory(tmp_path):
    config = RunConfig(**{**options("causal", Path("unused"), tmp_path / "run"), "model": "tiny"})
    tasks, stages = config.task_list, [[t] for t in config.task_list]
    with pytest.raises(Exception, match="main process did not open"):
        FollowerRunDirectory.open(config, tasks, stages)
    RunDirectory.open(config, tasks, stages)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    follower = FollowerRunDirectory.open(config, tasks, stages)
    follower.begin_attempt()
    follower.record_data({"tasks": {}})
    follower.save_stage(0, TaskUpdate(task="CB"), {"x": 1}, {"accuracy_matrix.csv": [[1.0, None, None]] * 3}, [], None)
    follower.finish({"OA": 1.0})
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    assert follower.completed == 0 and not follower.finished


def test_a_deepspeed_or_fsdp_accelerate_config_runs_as_plain_data_parallel(monkeypatch):
    """DeepSpeed is not installed here: building its plugin would fail; jumplora does not build it."""
    from jumplora.device import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accelerator = make_accelerator(RunConfig(precision="fp32", model="tiny"))
    assert accelerator.distributed_type.value == "NO"
    assert any("DeepSpeed" in str(w.message) for w in caught)
    assert os.environ["ACCELERATE_USE_DEEPSPEED"] == "true"  # the environment is left as it was


def test_the_shipped_accelerate_configs_are_what_their_names_say():
    from accelerate.commands.config.config_args import load_config_from_file

    folder = ROOT / "configs" / "accelerate"
    expected = {"ddp-8gpu.yaml": ("MULTI_GPU", 8), "deepspeed-zero2-8gpu.yaml": ("DEEPSPEED", 8),
                "cpu-2proc.yaml": ("MULTI_GPU", 2)}
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(expected)
    for name, (kind, processes) in expected.items():
        config = load_config_from_file(str(folder / name))
        assert (config.distributed_type.value, config.num_processes) == (kind, processes), name
    assert load_config_from_file(str(folder / "deepspeed-zero2-8gpu.yaml")).deepspeed_config["zero_stage"] == 2


# -- two processes through accelerate launch ----------------------------------------------------------------
def test_two_processes_give_the_one_process_run_tiny_llama(tiny_models, llama_two_process_run, tmp_path):
    values = options("causal", tiny_models["causal"], tmp_path / "one")
    one_process(values, tiny_models["causal"])
    assert_same_run(llama_two_process_run, tmp_path / "one", **GATED)


def test_two_processes_give_the_one_process_run_tiny_t5(tiny_models, tmp_path):
    two = launch(options("seq2seq", tiny_models["seq2seq"], tmp_path / "two"))
    assert two.stdout.count("accuracy matrix") == 1  # the main process prints the result, once
    one_process(options("seq2seq", tiny_models["seq2seq"], tmp_path / "one"), tiny_models["seq2seq"])
    assert_same_run(tmp_path / "two", tmp_path / "one", **UNGATED)


def test_a_two_process_run_killed_mid_sequence_resumes_to_the_same_result(tiny_models, llama_two_process_run,
                                                                          tmp_path):
    values = options("causal", tiny_models["causal"], tmp_path / "killed")
    state = tmp_path / "killed" / "state.json"
    launcher = subprocess.Popen(launch_command(values), env=launch_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while launcher.poll() is None:  # until the first task is finished
            if state.is_file() and json.loads(state.read_text())["completed"] >= 1:
                break
            time.sleep(0.02)
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both processes, no clean-up
    finally:
        launcher.wait(timeout=60)
    progress = json.loads(state.read_text())
    assert 1 <= progress["completed"] < 3 and not progress["finished"], progress  # killed mid-sequence

    launch(values)  # the same command again
    assert metrics(tmp_path / "killed") == metrics(llama_two_process_run)
    assert (tmp_path / "killed" / "losses.jsonl").read_bytes() == (llama_two_process_run / "losses.jsonl").read_bytes()
    for a, b in zip(records(tmp_path / "killed"), records(llama_two_process_run), strict=True):
        assert {k: v for k, v in a.items() if k not in PROCESS_KEYS} == {k: v for k, v in b.items() if k not in PROCESS_KEYS}
