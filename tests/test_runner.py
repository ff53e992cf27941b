"""The continual-learning runner end to end on tiny random models and the real benchmark files."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jumplora.config import RunConfig
from jumplora.errors import ConfigError, TrainingError
from jumplora.methods import METHODS, TaskContext, build_method, parse_method
from jumplora.schedule import JumpSchedule
from jumplora.ella_lambdas import PAPER_LAMBDAS, lambdas_for
from jumplora.testing import save_tiny, tiny_llama, tiny_t5
from jumplora.train import run_continual
from jumplora.updates import TaskUpdate

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "CL_Benchmark"
BUILD = {"causal": tiny_llama, "seq2seq": tiny_t5}


def tiny_config(tmp_path, method="jumplora", name=None, **overrides):
    values = dict(
        method=method, order="cb,copa", data_dir=str(DATA), seed=42, model="tiny",
        train_per_class=8, val_per_class=2, test_per_class=2, max_input_tokens=320,
        batch_size=4, micro_batch_size=2, learning_rate=5e-3, eval_batch_size=8, progress=False,
        output_dir=str(tmp_path / (name or method.replace("+", "_"))),
        ella_lambda="100",  # Table 7's 'paper' values exist for orders 1-6 only, not for the tiny custom order
    )
    values.update(overrides)
    return RunConfig(**values)


def loss_context(loaded, config, adapters) -> TaskContext:
    """A stage's context for calling a method's hooks by hand (no training loop around them)."""
    def no_loss(batch):
        raise AssertionError("this test computes no task loss")

    return TaskContext(model=loaded.model, config=config, kind=loaded.kind, task="CB", task_index=0,
                       adapters=adapters, schedule=JumpSchedule.for_task(10), steps=[], train_batches=[],
                       compute_loss=no_loss)


def run(tmp_path, kind="causal", method="jumplora", **overrides):
    return run_continual(tiny_config(tmp_path, method, **overrides), loaded=BUILD[kind](seed=0))


def read(path):
    return Path(path).read_text()


ALL_METHODS = ["inclora", "ella", "jumplora", "jumplora+ella", "single", "ewc", "olora", "lori", "mtl"]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs(tmp_path, kind, method):
    result = run(tmp_path, kind, method, ella_lambda="100")  # 'paper' λ exist for orders 1-6 only
    path = result.run_dir
    for name in ("config.yaml", "environment.json", "data.json", "state.json", "accuracy_matrix.csv",
                 "metrics.json", "losses.jsonl"):
        assert (path / name).is_file(), name
    metrics = json.loads(read(path / "metrics.json"))
    assert set(["OA", "BWT", "FWT", "sparsity", "wall_time_s", "peak_memory_mb", "cpu_time_s"]) <= set(metrics)
    assert 0 < metrics["cpu_time_s"]
    matrix = result.accuracy_matrix
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    state = json.loads(read(path / "state.json"))
    assert state["finished"] and state["tasks"] == ["CB", "COPA"]
    losses = [json.loads(line) for line in read(path / "losses.jsonl").splitlines()]
    assert losses and all(math.isfinite(r["loss"]) for r in losses)
    if method == "mtl":  # one stage on both tasks: only the final row
        assert math.isnan(matrix[0][0]) and not math.isnan(matrix[1][0]) and metrics["BWT"] is None
        assert metrics["OA"] is not None
    elif method == "single":  # each task alone: only the diagonal
        assert not math.isnan(matrix[0][0]) and math.isnan(matrix[1][0]) and not math.isnan(matrix[1][1])
    else:
        assert not any(math.isnan(v) for v in (matrix[0][0], matrix[1][0], matrix[1][1]))
        assert metrics["OA"] == pytest.approx((matrix[1][0] + matrix[1][1]) / 2, abs=0.01)
        assert metrics["BWT"] == pytest.approx(matrix[1][0] - matrix[0][0], abs=0.01)
    assert [p.name for p in (path / "method_state").glob("*.pt")] == [f"{len(updates_expected(method)) - 1:02d}.pt"]
    updates = sorted((path / "updates").glob("*.safetensors"))
    assert len(updates) == (1 if method == "mtl" else 2)
    update = TaskUpdate.load(updates[0])
    if parse_method(method).gated:  # JumpLoRA: a sparse update
        assert all(m.kind == "sparse" for m in update.modules.values())
        assert update.sparsity() > 0.0  # rank 8 on 32×32 matrices: τ starts at 50 % density
        assert any("gamma" in r and r["gamma"] == 1.0 for r in losses)
    else:
        assert all(m.kind == "lowrank" for m in update.modules.values()) and update.sparsity() == 0.0
    if method in ("ella", "jumplora+ella"):  # the penalty enters from the second task on
        terms = {r["task"]: r for r in losses}
        assert "ella_penalty" not in terms["CB"] and terms["COPA"]["ella_penalty"] > 0
    if method == "ewc":
        assert any("ewc_penalty" in r for r in losses if r["task"] == "COPA")
    if method == "olora":
        assert any(r.get("olora_orthogonality", 0) > 0 for r in losses if r["task"] == "COPA")


def updates_expected(method):
    return ["CB+COPA"] if method == "mtl" else ["CB", "COPA"]


def test_single_task_runs_leave_the_base_model_unchanged(tmp_path):
    loaded = tiny_llama(seed=0)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    run_continual(tiny_config(tmp_path, "single"), loaded=loaded)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=1e-6)


def test_fwt_uses_single_runs_of_the_same_scale(tmp_path):
    single = run(tmp_path, method="single")
    result = run(tmp_path, method="inclora")
    diagonal = [single.accuracy_matrix[i][i] for i in range(2)]
    expected = sum(result.accuracy_matrix[i][i] - diagonal[i] for i in range(2)) / 2
    assert result.metrics["FWT"] == pytest.approx(expected, abs=1e-6)
    assert result.metrics["fwt_reference"] == str(single.run_dir.resolve())
    # another scale does not count as a reference
    other = run(tmp_path, method="inclora", name="other", train_per_class=4)
    assert other.metrics["FWT"] is None


def test_resume_after_interruption_gives_identical_results(tmp_path, monkeypatch):
    reference = run(tmp_path, name="uninterrupted", method="jumplora+ella", ella_lambda="100")

    import jumplora.train as train

    calls = {"n": 0}
    real = train.evaluate_task

    def crash_on_second_task(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # first evaluation after the second task
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate_task", crash_on_second_task)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, name="resumed", method="jumplora+ella", ella_lambda="100")
    state = json.loads(read(tmp_path / "resumed" / "state.json"))
    assert state["completed"] == 1 and not state["finished"]
    monkeypatch.setattr(train, "evaluate_task", real)
    resumed = run(tmp_path, name="resumed", method="jumplora+ella", ella_lambda="100")

    assert resumed.accuracy_matrix == reference.accuracy_matrix
    for key in ("OA", "BWT", "sparsity"):
        assert resumed.metrics[key] == reference.metrics[key]
    assert read(resumed.run_dir / "losses.jsonl") == read(reference.run_dir / "losses.jsonl")
    assert read(resumed.run_dir / "accuracy_matrix.csv") == read(reference.run_dir / "accuracy_matrix.csv")


def test_resume_after_kill_9_from_the_command_line(tmp_path):
    model_dir = save_tiny(tiny_llama(seed=0), tmp_path / "tiny-model")
    args = [sys.executable, "-m", "jumplora.cli", "run", "--method", "jumplora", "--order", "cb,copa,wic",
            "--data-dir", str(DATA), "--model", str(model_dir), "--train-per-class", "16", "--test-per-class", "2",
            "--max-input-tokens", "320", "--batch-size", "4", "--micro-batch-size", "2", "--progress", "false"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # see conftest.py
    reference = subprocess.run(args + ["--output-dir", str(tmp_path / "a")], env=env, capture_output=True, text=True,
                               timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert "OA" in reference.stdout and "accuracy matrix" in reference.stdout

    process = subprocess.Popen(args + ["--output-dir", str(tmp_path / "b")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = tmp_path / "b" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if state_file.exists() and json.loads(state_file.read_text())["completed"] >= 1:
            break
        if process.poll() is not None:
            break
        time.sleep(0.05)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed, "the run finished before it could be killed"
    assert not json.loads(state_file.read_text())["finished"]
    resumed = subprocess.run(args + ["--output-dir", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if sys.platform.startswith("linux"):  # the command relaunched itself under the mimalloc wheel (allocator.py)
        assert json.loads(read(tmp_path / "a" / "environment.json"))["malloc"] == "mimalloc"
    metrics_a = json.loads(read(tmp_path / "a" / "metrics.json"))
    metrics_b = json.loads(read(tmp_path / "b" / "metrics.json"))
    for key in ("OA", "BWT", "sparsity", "forgetting"):
        assert metrics_a[key] == metrics_b[key]
    assert read(tmp_path / "a" / "accuracy_matrix.csv") == read(tmp_path / "b" / "accuracy_matrix.csv")


def test_mismatched_configuration_is_refused(tmp_path):
    run(tmp_path, name="same")
    with pytest.raises(ConfigError, match="different configuration.*learning_rate"):
        run(tmp_path, name="same", learning_rate=1e-4)
    # options that do not change results may differ
    run(tmp_path, name="same", progress=False, eval_batch_size=4)


def test_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a jumplora run directory"):
        run(tmp_path, name="foreign")
    assert read(tmp_path / "foreign" / "notes.txt") == "mine"


def test_nan_loss_stops_with_task_and_step_and_keeps_earlier_results(tmp_path, monkeypatch):
    from jumplora.methods.inclora import IncLoRA

    def nan_on_second_task(self, ctx):
        return {"poison": torch.tensor(float("nan"))} if ctx.task == "COPA" else {}

    monkeypatch.setattr(IncLoRA, "loss_terms", nan_on_second_task)
    with pytest.raises(TrainingError, match=r"task COPA: loss is nan at step 0"):
        run(tmp_path, method="inclora")
    path = tmp_path / "inclora"
    assert json.loads(read(path / "state.json"))["completed"] == 1
    assert (path / "updates" / "00-CB.safetensors").is_file()
    assert read(path / "accuracy_matrix.csv").splitlines()[1].startswith("CB,")


def test_unknown_names_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'elaa'"):
        tiny_config(tmp_path, "elaa")
    with pytest.raises(ConfigError, match="threshold_mode must be one of"):
        tiny_config(tmp_path, threshold_mode="per-layer")
    from jumplora.errors import DataError

    with pytest.raises(DataError, match="nosuchtask"):
        run(tmp_path, order="cb,nosuchtask")
    assert not (tmp_path / "jumplora").exists() or not (tmp_path / "jumplora" / "metrics.json").exists()


def test_method_names_and_gating():
    assert parse_method("jumplora") == ("inclora", True)
    assert parse_method("JumpLoRA+ELLA") == ("ella", True)
    assert parse_method("ella") == ("ella", False)
    assert set(ALL_METHODS) - {"jumplora", "jumplora+ella"} <= set(METHODS)
    # the names and labels analyses read, from the method name alone (no method registry)
    assert parse_method("jumplora+ewc").label == "JumpLoRA + EWC" and parse_method("jumplora+ewc").base.label == "EWC"
    assert parse_method("jumplora").name == "jumplora" and parse_method("jumplora+olora").name == "jumplora+olora"


def test_ella_lambdas_follow_table_7():
    assert lambdas_for("paper", "1", 4) == [0.0, 3e4, 3e4, 3e4]
    order4 = lambdas_for("paper", "4", 15)
    assert order4[0] == 0 and order4[1:14] == [5e5] * 13 and order4[14] == 5e7
    order5 = lambdas_for("paper", "5", 15)
    assert order5[1:12] == [5e6] * 11 and order5[12:] == [5e7] * 3
    assert lambdas_for("paper", "6", 15) == [0.0] + [5e5] * 14
    assert all(len(PAPER_LAMBDAS[o]) == (4 if o <= 3 else 15) for o in PAPER_LAMBDAS)
    assert lambdas_for(10.0, "1", 4) == [0.0, 10.0, 10.0, 10.0]
    assert lambdas_for("1,2,3", "cb,copa,wic", 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="2 values for 3 tasks"):
        lambdas_for("1,2", "x", 3)
    with pytest.raises(ConfigError, match="orders 1-6"):
        lambdas_for("paper", "cb,copa", 2)


def test_ella_penalty_switches_to_the_sparse_update(tmp_path):
    """Algorithm 1 line 16: ΔW before S_start, ΔW_jump after (or ΔW_interp with --ella-penalty interp);
    the legacy convention (unscaled, summed, through the JumpReLU pseudo-gradient)."""
    from jumplora.injection import AdapterConfig, inject_adapters

    loaded = tiny_llama(seed=0)
    for penalty in ("sparse", "interp"):
        config = tiny_config(tmp_path, "jumplora+ella", ella_penalty=penalty, ella_lambda="2.0",
                             ella_scale="unscaled-sum", ella_threshold_grad=True)
        method = build_method(config)
        adapters = inject_adapters(loaded.model, AdapterConfig(target_modules=("q_proj", "v_proj"), gated=True))
        with torch.no_grad():
            for layer in adapters.layers.values():
                layer.lora_B.normal_(0, 0.5)
        method.past = {name: torch.randn(layer.base.weight.shape) for name, layer in adapters.layers.items()}
        method.current_lambda = 2.0
        ctx = loss_context(loaded, config, adapters)

        def expected(which):
            return 2.0 * sum((layer.current_update(which) * method.past[name]).pow(2).sum()
                             for name, layer in adapters.layers.items())

        dense = method.loss_terms(ctx)["ella_penalty"]
        torch.testing.assert_close(dense, expected("dense"))
        adapters.init_thresholds()
        adapters.set_gamma(0.5)
        gated = method.loss_terms(ctx)["ella_penalty"]
        torch.testing.assert_close(gated, expected("jump" if penalty == "sparse" else "interp"))
        assert not torch.allclose(gated, dense)
        adapters.remove()


def test_cli_help_documents_every_option_with_its_default(capsys):
    import dataclasses

    from jumplora.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, flag
    assert "(default: 0.001)" in text and "(default: jumplora)" in text and "(default: 32)" in text


def test_yaml_config_with_flag_override(tmp_path):
    from jumplora.cli import build_parser
    from jumplora.commands.run import config_from_args

    config_file = tmp_path / "run.yaml"
    config_file.write_text("method: ella\norder: 2\nlearning_rate: 0.01\nthreshold: local\n")  # its old name
    args = build_parser(only="run").parse_args(["run", "--config", str(config_file), "--learning-rate", "0.002"])
    config = config_from_args(args)
    assert (config.method, config.order, config.learning_rate, config.threshold_mode) == ("ella", "2", 0.002, "local")
    for flag in ("--threshold", "--threshold-mode"):  # the old flag stays
        args = build_parser(only="run").parse_args(["run", "--config", str(config_file), flag, "global"])
        assert config_from_args(args).threshold_mode == "global"
    config_file.write_text("threshold: local\nthreshold_mode: global\n")
    with pytest.raises(ConfigError, match="threshold and threshold_mode are one option"):
        config_from_args(build_parser(only="run").parse_args(["run", "--config", str(config_file)]))
    config_file.write_text("methd: ella\n")
    with pytest.raises(ConfigError, match="unknown option.*methd"):
        config_from_args(build_parser(only="run").parse_args(["run", "--config", str(config_file)]))


def test_rank_classification_matrix_alongside_generation(tmp_path):
    result = run(tmp_path, "seq2seq", "jumplora", eval_mode="both")
    rank_rows = read(result.run_dir / "accuracy_matrix_rank.csv").splitlines()
    assert rank_rows[0] == "after_task,CB,COPA" and len(rank_rows) == 3
    assert all(cell != "" for cell in rank_rows[2].split(",")[1:])
    assert set(result.metrics["rank"]) == {"OA", "BWT"}


def test_tensorboard_logging_or_a_warning_when_missing(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.warns(UserWarning, match="tensorboard is not installed"):
            result = run(tmp_path, method="inclora", log="tensorboard")
    else:
        result = run(tmp_path, method="inclora", log="tensorboard")
        assert any((result.run_dir / "tensorboard").iterdir())
    assert (result.run_dir / "losses.jsonl").read_text().strip()  # nothing lost either way
