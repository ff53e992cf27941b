"""The run directory under faults (issue 12): kill -9 at any point, full disks, neighbours, bad values.

Nothing is lost and nothing is silently wrong: a run killed anywhere resumes to the same files as an
uninterrupted one, a finished run is never rewritten, a broken neighbour is skipped with a warning,
and every bad value or I/O error ends in one line (exit status 2) before any work.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import jumplora.train as train
from jumplora.cli import main
from jumplora.errors import ConfigError, TrainingError, UserError
from jumplora.testing import save_tiny, tiny_llama
from jumplora.rundir import RunDirectory
from jumplora.train import run_continual
from test_runner import DATA, tiny_config

# a tiny run: 2 tasks, at most 3 optimiser steps each, one test record per class; ELLA keeps a method state
SMALL = dict(method="jumplora+ella", ella_lambda="100", train_per_class=2, test_per_class=1, max_steps_per_task=3)


class Killed(BaseException):
    """A simulated crash: not an Exception, so no handler of the code under test catches it."""


def small(tmp_path, name, **overrides):
    values = {**SMALL, **overrides}
    return tiny_config(tmp_path, values.pop("method"), name=name, **values)


def go(config):
    return run_continual(config, loaded=tiny_llama(seed=0))


def interrupt_in_second_task(monkeypatch, config):
    """Run `config` until its first evaluation after the second task, then crash: one task is finished."""
    real = train.evaluate_task
    calls = {"n": 0}

    def crash_at_second_task(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train, "evaluate_task", crash_at_second_task)
        with pytest.raises(Killed):
            go(config)
    assert json.loads((config.run_dir / "state.json").read_text())["completed"] == 1


def fingerprint_accuracy(real):
    """Evaluation whose accuracy is a full-precision function of the model weights: any difference in what a
    resumed run restored shows in the accuracy matrix and the metrics (a tiny random model scores 0 everywhere)."""

    def evaluate(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        total = sum(float(p.detach().double().sum()) for p in model.parameters())
        return dataclasses.replace(result, accuracy=abs(total * 1000) % 100)

    return evaluate


def same_metrics(a: Path, b: Path) -> None:
    """metrics.json equal but for what legitimately differs between processes (wall time, peak memory)."""
    def values(path):
        metrics = json.loads((path / "metrics.json").read_text())
        return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "peak_memory_mb", "cpu_time_s")}

    assert values(a) == values(b)


def without(path: Path, *keys: str) -> dict:
    """A YAML or JSON file's mapping less `keys`."""
    return {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in keys}  # JSON is YAML


def same_run_files(resumed: Path, reference: Path) -> None:
    """Every file of `resumed` equals `reference`'s: byte for byte, or value for value where it holds
    wall times (metrics.json, tasks/) or names its own folder (config.yaml)."""
    names = sorted(str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(resumed)) for p in resumed.rglob("*") if p.is_file()) == names
    for name in names:
        if name == "config.yaml":
            assert without(resumed / name, "output_dir") == without(reference / name, "output_dir")
        elif name.startswith("tasks/"):  # a stage's wall time and peak memory are its process's
            assert without(resumed / name, "wall_time_s", "peak_memory_mb", "cpu_time_s") == \
                without(reference / name, "wall_time_s", "peak_memory_mb", "cpu_time_s"), name
        elif name != "metrics.json":
            assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    same_metrics(resumed, reference)


# -- 1. the invariant: the task's files, then the state, then the deletion of what is no longer needed --------
def test_a_kill_right_after_the_next_method_state_is_written_resumes(tmp_path, monkeypatch):
    reference = go(small(tmp_path, "reference"))
    config = small(tmp_path, "killed")
    real = RunDirectory.save_method_state

    def crash_after_writing_01(self, index, state):
        real(self, index, state)
        if index == 1:
            raise Killed  # method_state/01.pt is written, state.json still says one task is done

    with monkeypatch.context() as patch:
        patch.setattr(RunDirectory, "save_method_state", crash_after_writing_01)
        with pytest.raises(Killed):
            go(config)
    assert json.loads((config.run_dir / "state.json").read_text())["completed"] == 1
    assert (config.run_dir / "method_state" / "00.pt").is_file()  # still needed to resume
    resumed = go(config)
    assert resumed.accuracy_matrix == reference.accuracy_matrix
    assert [p.name for p in (config.run_dir / "method_state").iterdir()] == ["01.pt"]
    same_run_files(config.run_dir, reference.run_dir)


class KillPoints:
    """Numbers the events of a run (each optimiser step, each evaluation, each file written: before and after
    its rename) and sends SIGKILL to the process at event `kill_at`."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at = kill_at
        self.events: list[str] = []

    def event(self, name: str) -> None:
        self.events.append(name)
        if len(self.events) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self, patch) -> None:
        import jumplora.atomic as atomic
        from jumplora.progress import Logger

        commit, step, evaluate = atomic._commit, Logger.step, train.evaluate_task

        def committing(tmp, path):
            self.event(f"before renaming {path.name}")
            commit(tmp, path)
            self.event(f"after renaming {path.name}")

        def stepping(logger, record, bar):
            step(logger, record, bar)
            self.event(f"after step {record['step']} of {record['task']}")

        def evaluating(*args, **kwargs):
            self.event("evaluating")
            return evaluate(*args, **kwargs)

        patch.setattr(atomic, "_commit", committing)
        patch.setattr(Logger, "step", stepping)
        patch.setattr(train, "evaluate_task", evaluating)


def run_killed_at(config, kill_at: int) -> None:
    """Run `config` in a forked child that SIGKILLs itself at event `kill_at` (no handler, no cleanup runs)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 3
        try:
            with pytest.MonkeyPatch.context() as patch:
                KillPoints(kill_at).install(patch)
                go(config)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"event {kill_at}: status {status}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killed_at_every_point_of_its_life_a_run_resumes_to_identical_files(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "evaluate_task", fingerprint_accuracy(train.evaluate_task))
    counting = KillPoints()
    with monkeypatch.context() as patch:
        counting.install(patch)
        reference = go(small(tmp_path, "reference"))
    events = counting.events
    assert sum(e.startswith("after step") for e in events) >= 3 and events.count("evaluating") == 3
    assert sum(e.startswith("before renaming") for e in events) >= 16  # every file of the run, each save
    for kill_at in range(1, len(events) + 1):
        config = small(tmp_path, f"killed-{kill_at:02d}")
        run_killed_at(config, kill_at)
        resumed = go(config)
        assert resumed.accuracy_matrix == reference.accuracy_matrix, events[kill_at - 1]
        assert not list(config.run_dir.rglob("*.tmp")), events[kill_at - 1]
        same_run_files(config.run_dir, reference.run_dir)
    print(f"kill points: {len(events)}, all resumed identically")


# -- 2. a neighbour never breaks a run ----------------------------------------------------------------------
def test_broken_or_foreign_neighbours_are_skipped_with_a_warning(tmp_path):
    single = go(small(tmp_path, "z-single", method="single"))  # sorted after the broken ones
    single_config = (single.run_dir / "config.yaml").read_text()
    broken = {
        "a-bad-yaml": {"config.yaml": "method: [single\n"},
        "b-yaml-list": {"config.yaml": "- method\n- single\n"},
        "c-no-tasks": {"config.yaml": single_config, "state.json": '{"finished": true}'},
        "d-bad-state": {"config.yaml": single_config, "state.json": "{not json"},
        "e-bad-matrix": {"config.yaml": single_config, "state.json": (single.run_dir / "state.json").read_text(),
                         "accuracy_matrix.csv": "after_task,CB,COPA\nCB,abc,\n"},
    }
    for folder, files in broken.items():
        (tmp_path / folder).mkdir()
        for name, text in files.items():
            (tmp_path / folder / name).write_text(text)
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "plots").mkdir()  # a folder without config.yaml is not a run: skipped silently

    with pytest.warns(UserWarning) as caught:
        result = go(small(tmp_path, "main"))
    messages = " ".join(str(w.message) for w in caught)
    for folder in broken:
        assert folder in messages
    assert "plots" not in messages and "notes.txt" not in messages
    assert json.loads((result.run_dir / "state.json").read_text())["finished"]
    assert (result.run_dir / "metrics.json").is_file()
    assert result.metrics["fwt_reference"] == str(single.run_dir.resolve())


def test_a_bad_single_dir_is_refused_before_any_work(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(ConfigError, match="single-dir"):
        go(small(tmp_path, "main", single_dir=str(tmp_path / "not-a-run")))
    assert not (tmp_path / "main").exists()
    other = go(small(tmp_path, "other-scale", method="single", train_per_class=3))
    with pytest.raises(ConfigError, match="single-dir.*another model, scale or seed"):
        go(small(tmp_path, "main", single_dir=str(other.run_dir)))
    assert not (tmp_path / "main").exists()


# -- 3. zero training steps ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field", [
    (dict(epochs=0), "epochs"),
    (dict(batch_size=-4, micro_batch_size=4), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(max_steps_per_task=0), "max_steps_per_task"),
])
def test_zero_training_steps_are_refused_before_any_work(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field):
        go(small(tmp_path, "run", **overrides))
    assert not (tmp_path / "run").exists()


# -- 4. a finished run is read-only -------------------------------------------------------------------------
def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def test_a_finished_run_is_read_only(tmp_path, capsys):
    config = small(tmp_path, "done")
    first = go(config)
    before = snapshot(config.run_dir)
    again = go(config)
    assert snapshot(config.run_dir) == before
    assert again.already_finished and not first.already_finished
    assert again.accuracy_matrix == first.accuracy_matrix
    assert again.metrics == json.loads((config.run_dir / "metrics.json").read_text())

    options = tmp_path / "options.yaml"
    options.write_text(yaml.safe_dump(config.to_dict()))
    capsys.readouterr()
    assert main(["run", "--config", str(options)]) == 0  # the model ("tiny") is never loaded
    out = capsys.readouterr().out
    assert "is finished" in out and "accuracy matrix" in out and "OA" in out
    assert snapshot(config.run_dir) == before


# -- 5. resume is exact -------------------------------------------------------------------------------------
def test_a_resumed_run_reads_earlier_accuracies_at_full_precision(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "evaluate_task", fingerprint_accuracy(train.evaluate_task))
    reference = go(small(tmp_path, "reference"))
    assert round(reference.accuracy_matrix[0][0], 2) != reference.accuracy_matrix[0][0]  # the CSV rounds it
    config = small(tmp_path, "resumed")
    interrupt_in_second_task(monkeypatch, config)
    resumed = go(config)
    assert resumed.accuracy_matrix == reference.accuracy_matrix
    assert resumed.metrics["BWT"] == reference.metrics["BWT"]
    assert resumed.metrics["OA"] == reference.metrics["OA"]
    same_metrics(config.run_dir, reference.run_dir)


# -- 6. the data a resumed run reads ------------------------------------------------------------------------
def copy_data(root: Path) -> Path:
    for folder in ("NLI/CB", "COPA/COPA"):
        shutil.copytree(DATA / folder, root / folder)
    shutil.copy(DATA / "instruction_config.json", root)
    return root


def test_resume_refuses_changed_data_and_accepts_moved_data(tmp_path, monkeypatch):
    data = copy_data(tmp_path / "data")
    reference = go(small(tmp_path, "reference", data_dir=str(data)))
    config = small(tmp_path, "run", data_dir=str(data))
    interrupt_in_second_task(monkeypatch, config)
    digests = json.loads((config.run_dir / "data.json").read_text())["tasks"]["COPA"]["files"]
    assert set(digests) >= {"COPA/COPA/train.json", "COPA/COPA/test.json", "COPA/COPA/labels.json",
                            "instruction_config.json"}

    train_file = data / "COPA" / "COPA" / "train.json"
    original = train_file.read_bytes()
    records = json.loads(original)
    records[0]["sentence"] += " (edited)"
    train_file.write_text(json.dumps(records))
    with pytest.raises(ConfigError, match="COPA/COPA/train.json"):
        go(config)
    train_file.write_bytes(original)

    moved = data.rename(tmp_path / "moved")
    resumed = go(dataclasses.replace(config, data_dir=str(moved)))
    assert resumed.accuracy_matrix == reference.accuracy_matrix
    same_metrics(config.run_dir, reference.run_dir)


# -- 7. bad values: one line, exit status 2, before any work ------------------------------------------------
BAD_FLAGS = [
    (["--micro-batch-size", "0"], "micro_batch_size"),
    (["--batch-size", "0"], "batch_size"),
    (["--batch-size", "-4", "--micro-batch-size", "4"], "batch_size"),
    (["--epochs", "0"], "epochs"),
    (["--s-start", "1.5"], "s_start"),
    (["--s-start", "-0.2"], "s_start"),
    (["--s-final", "abc"], "s_final"),
    (["--bandwidth", "0"], "bandwidth"),
    (["--bandwidth", "-0.001"], "bandwidth"),
    (["--rank", "0"], "rank"),
    (["--rank", "eight"], "rank"),
    (["--learning-rate", "nan"], "learning_rate"),
    (["--learning-rate", "-0.001"], "learning_rate"),
    (["--alpha", "inf"], "alpha"),
    (["--lora-dropout", "1.5"], "lora_dropout"),
    (["--warmup-steps", "-1"], "warmup_steps"),
    (["--weight-decay", "-1"], "weight_decay"),
    (["--max-grad-norm", "-1"], "max_grad_norm"),
    (["--eval-batch-size", "0"], "eval_batch_size"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--max-input-tokens", "0"], "max_input_tokens"),
    (["--test-per-class", "0"], "test_per_class"),
    (["--seed", "-1"], "seed"),
    (["--progress", "maybe"], "progress"),
    (["--method", "ella", "--ella-lambda", "-5"], "ella_lambda"),
    (["--method", "ella", "--ella-lambda", "1,2,3"], "ella_lambda"),
    (["--method", "ewc", "--ewc-lambda", "nan"], "ewc_lambda"),
    (["--method", "ewc", "--ewc-fisher-batches", "0"], "ewc_fisher_batches"),
    (["--method", "lori", "--lori-sparsity", "1"], "lori_sparsity"),
    (["--method", "olora", "--olora-lambda", "-1"], "olora_lambda"),
    (["--model-kind", "encoder"], "model_kind"),
    (["--target-modules", ""], "target_modules"),
    (["--order", "cb,nosuchtask"], "nosuchtask"),
]
BAD_YAML = [
    ("learning_rate: fast\n", "learning_rate"),
    ("rank: eight\n", "rank"),
    ("batch_size: 8.5\n", "batch_size"),
    ("rank: true\n", "rank"),
    ("epochs:\n", "epochs"),
    ("prompt_header: maybe\n", "prompt_header"),
    ("target_modules: []\n", "target_modules"),
    ("bandwidth: [0.1]\n", "bandwidth"),
]


def base_args(tmp_path) -> list[str]:
    return ["run", "--order", "cb,copa", "--data-dir", str(DATA), "--model", "tiny", "--progress", "false",
            "--output-dir", str(tmp_path / "run")]


def refused(tmp_path, monkeypatch, capsys, args) -> str:
    """Run the CLI in-process with a model loader that fails the test; return the one line it printed."""
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("jumplora.models.load_model", never)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags, field", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, flags, field):
    err = refused(tmp_path, monkeypatch, capsys, base_args(tmp_path) + flags)
    assert field in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, field", BAD_YAML, ids=[t.strip() for t, _ in BAD_YAML])
def test_a_bad_yaml_value_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys, text, field):
    options = tmp_path / "options.yaml"
    options.write_text(text)
    err = refused(tmp_path, monkeypatch, capsys, base_args(tmp_path) + ["--config", str(options)])
    assert field in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on the CPU only")
def test_fp16_on_the_cpu_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    assert "fp16" in refused(tmp_path, monkeypatch, capsys, base_args(tmp_path) + ["--precision", "fp16"])
    assert not (tmp_path / "run").exists()


def test_an_output_path_that_is_a_file_or_under_one_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("mine")
    for output in (tmp_path / "file", tmp_path / "file" / "run"):
        args = base_args(tmp_path)[:-1] + [str(output)]
        assert str(tmp_path / "file") in refused(tmp_path, monkeypatch, capsys, args)
    assert (tmp_path / "file").read_text() == "mine"


def mount_tmpfs(path: Path, options: str) -> None:
    """A small file system of our own (root only): skip where it cannot be had."""
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "read-only"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
    else:
        mount_tmpfs(folder, "ro,size=64k")
    try:
        args = base_args(tmp_path)[:-1] + [str(folder / "run")]
        err = refused(tmp_path, monkeypatch, capsys, args)
        assert str(folder / "run") in err and ("ermission" in err or "ead-only" in err)
    finally:
        folder.chmod(0o755) if os.geteuid() != 0 else unmount(folder)


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(tmp_path, monkeypatch):
    reference = go(small(tmp_path, "reference"))
    config = small(tmp_path, "run")
    real = os.fsync
    calls = {"n": 0}

    def full_after_ten(fd):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full_after_ten)
        with pytest.raises(UserError, match=r"cannot write .*run/.*No space left on device.*free"):
            go(config)
    assert not list(config.run_dir.rglob("*.tmp"))  # nothing half-written left behind
    go(config)
    same_run_files(config.run_dir, reference.run_dir)


def test_a_really_full_disk_is_one_line_and_resumes(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=2m")
    try:
        reference = go(small(tmp_path, "reference"))
        config = dataclasses.replace(small(tmp_path, "run"), output_dir=str(disk / "run"))
        filler = disk / "filler"
        with open(filler, "wb") as handle:  # leave a few KB: the run fills the rest
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            handle.write(b"\0" * max(free - 24 * 1024, 0))
        with pytest.raises(UserError, match="No space left on device"):
            go(config)
        assert not list(config.run_dir.rglob("*.tmp"))
        filler.unlink()
        go(config)
        same_run_files(config.run_dir, reference.run_dir)
    finally:
        unmount(disk)


@pytest.mark.parametrize("name", ["updates/00-CB.safetensors", "state.json", "method_state/00.pt",
                                  "tasks/00-CB.json", "losses.jsonl"])
def test_a_truncated_file_is_one_line_naming_it(tmp_path, monkeypatch, name):
    config = small(tmp_path, "run")
    interrupt_in_second_task(monkeypatch, config)
    path = config.run_dir / name
    data = path.read_bytes()
    cut = len(data) // 2
    path.write_bytes(data[: cut - 1 if data[cut - 1: cut] == b"\n" else cut])  # mid-line for losses.jsonl
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        go(config)


def test_a_divergence_before_the_threshold_initialisation_stops_with_the_training_message(tmp_path, monkeypatch):
    real_step = torch.optim.AdamW.step

    def poisoned(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                for parameter in group["params"]:
                    parameter.fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    with pytest.raises(TrainingError, match=r"task CB: training diverged at step 0"):
        go(small(tmp_path, "run", method="jumplora"))
    assert json.loads((tmp_path / "run" / "state.json").read_text())["completed"] == 0


def test_an_overflowing_learning_rate_stops_with_the_training_message(tmp_path):
    with pytest.raises(TrainingError, match=r"task CB: the optimiser step 0 overflowed"):  # a RuntimeError in AdamW
        go(small(tmp_path, "run", learning_rate=1e38))


def test_bad_values_from_the_command_line_exit_2_with_one_line(tmp_path):
    """As a user sees it: a real process, no traceback, and the model ('tiny', not loadable) never loaded."""
    options = tmp_path / "options.yaml"
    options.write_text("learning_rate: fast\n")
    (tmp_path / "file").write_text("")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for extra, expected in ((["--config", str(options)], "learning_rate"), (["--bandwidth", "0"], "bandwidth"),
                            (["--output-dir", str(tmp_path / "file")], str(tmp_path / "file"))):
        done = subprocess.run([sys.executable, "-m", "jumplora.cli", *base_args(tmp_path), *extra], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr, done.stderr


# -- 8. minor -----------------------------------------------------------------------------------------------
def test_method_names_are_stored_normalised(tmp_path, monkeypatch):
    config = small(tmp_path, "run", method=" JumpLoRA+ELLA")
    assert config.method == "jumplora+ella"
    interrupt_in_second_task(monkeypatch, config)
    assert yaml.safe_load((config.run_dir / "config.yaml").read_text())["method"] == "jumplora+ella"
    # a directory written before the names were normalised resumes
    saved = config.run_dir / "config.yaml"
    saved.write_text(saved.read_text().replace("method: jumplora+ella", "method: JumpLoRA+ELLA"))
    assert json.loads((config.run_dir / "state.json").read_text())["completed"] == 1
    go(config)


def test_progress_false_hides_the_weight_loading_bar(tmp_path, capfd):
    model = save_tiny(tiny_llama(seed=0), tmp_path / "tiny-model")
    capfd.readouterr()
    run_continual(small(tmp_path, "run", model=str(model)))
    assert "Loading weights" not in capfd.readouterr().err


def test_every_file_of_a_run_has_the_permissions_of_an_ordinary_file(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    result = go(small(tmp_path, "run"))
    modes = {str(p.relative_to(result.run_dir)): p.stat().st_mode & 0o777
             for p in result.run_dir.rglob("*") if p.is_file()}
    assert any(name.startswith("updates/") for name in modes)
    assert modes == {name: 0o666 & ~mask for name in modes}


# -- the same classes elsewhere -------------------------------------------------------------------------
def test_a_broken_fwt_reference_is_skipped_by_the_analyses_with_a_warning(tmp_path):
    from jumplora.analysis import load_run
    from rundirs import write_run

    root = write_run(tmp_path / "run", metrics={"fwt_reference": str(tmp_path / "single")})
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "config.yaml").write_text("method: [single\n")
    with pytest.warns(UserWarning, match="single"):
        assert load_run(root).single_accuracies() is None


def test_a_changed_order_file_is_refused_on_resume(tmp_path, monkeypatch):
    order = tmp_path / "order.txt"
    order.write_text("cb\ncopa\n")
    config = small(tmp_path, "run", order=str(order))
    interrupt_in_second_task(monkeypatch, config)
    order.write_text("cb\nwic\n")
    with pytest.raises(ConfigError, match="order now gives"):
        go(dataclasses.replace(config))
