"""`jumplora export`: the run's model after a task as a Hugging Face folder, loadable without jumplora."""

import subprocess
import sys

import pytest
import torch

from jumplora.cli import main
from jumplora.config import RunConfig
from jumplora.errors import UserError
from jumplora.export import EXPORT_RECORD, export_model
from jumplora.models import load_model
from jumplora.train import run_continual
from tinyruns import BUILD, logits, tiny_run

# the export adds the stored float32 updates to the float32 base weights in the run's order, as the run
# did: the weights come out bit for bit; logits are compared to within this
TOLERANCE = 1e-6


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_export_equals_the_runs_model_after_each_task(tmp_path, kind):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    run_dir, after, model_dir = tiny_run(tmp_path, kind)
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    reference = BUILD[kind](seed=0).model
    for task, out_args in (("CB", ["--after-task", "CB"]), ("COPA", [])):
        out = tmp_path / f"export-{task}"
        assert main(["export", str(run_dir), "--out", str(out), *out_args]) == 0
        assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
        assert (out / EXPORT_RECORD).is_file()
        exported = auto.from_pretrained(out)
        AutoTokenizer.from_pretrained(out)
        reference.load_state_dict(after[task])
        reference.eval()
        assert torch.allclose(logits(exported, kind), logits(reference, kind), atol=TOLERANCE, rtol=0)
        for key, value in exported.state_dict().items():
            assert torch.equal(value, after[task][key]), key
    base = auto.from_pretrained(model_dir)
    assert not torch.allclose(logits(base, kind), logits(exported, kind))  # training changed it


def test_export_loads_without_jumplora(tmp_path):
    run_dir, after, _ = tiny_run(tmp_path, "causal", order="cb")
    out = tmp_path / "export"
    export_model(run_dir, out)
    code = ("import sys; from transformers import AutoModelForCausalLM; "
            f"AutoModelForCausalLM.from_pretrained({str(out)!r}); "
            "assert not any(m.startswith('jumplora') for m in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_single_run_exports_the_base_plus_that_tasks_update(tmp_path):
    run_dir, after, _ = tiny_run(tmp_path, "causal", method="single")
    out = tmp_path / "export"
    export_model(run_dir, out, "CB")
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    # the run took CB's update out after evaluating it: its model is the base again; the export is CB's model
    assert any(not torch.equal(exported[k], after["CB"][k]) for k in after["CB"])


def test_bad_exports_are_refused_and_nothing_is_written(tmp_path, capsys):
    run_dir, _, _ = tiny_run(tmp_path, "causal", order="cb")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "--out", str(occupied)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"] and (occupied / "keep.txt").read_text() == "mine"

    assert main(["export", str(run_dir), "--out", str(tmp_path / "new"), "--after-task", "WiC"]) == 2
    err = capsys.readouterr().err
    assert "no task 'WiC'" in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "new")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert not list(tmp_path.glob(".new.*"))

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(run_dir), "--out", str(empty)]) == 0  # an empty folder is fine
    assert (empty / "model.safetensors").is_file()


def test_an_unfinished_task_is_refused(tmp_path, monkeypatch):
    run_dir, _, model_dir = tiny_run(tmp_path, "causal", order="cb")
    # the same configuration on two tasks, killed while saving its second: state.json says 1 of 2
    import jumplora.rundir.writer as writer

    save = writer.RunDirectory.save_stage

    def killed(self, index, *args, **kwargs):
        if index == 1:
            raise KeyboardInterrupt
        return save(self, index, *args, **kwargs)

    config = RunConfig.from_dict({**dict(load_config(run_dir)), "order": "cb,copa",
                                  "output_dir": str(tmp_path / "unfinished")}, source="test")
    monkeypatch.setattr(writer.RunDirectory, "save_stage", killed)
    with pytest.raises(KeyboardInterrupt):
        run_continual(config, loaded=load_model(model_dir, progress=False))
    monkeypatch.setattr(writer.RunDirectory, "save_stage", save)
    with pytest.warns(UserWarning, match="unfinished"):
        with pytest.raises(UserError, match="not finished"):
            export_model(tmp_path / "unfinished", tmp_path / "out")
        with pytest.raises(UserError, match="task 'COPA' is not finished"):
            export_model(tmp_path / "unfinished", tmp_path / "out", "COPA")
        assert not (tmp_path / "out").exists()
        export_model(tmp_path / "unfinished", tmp_path / "out", "CB")  # its finished task exports
    assert (tmp_path / "out" / "model.safetensors").is_file()


def load_config(run_dir):
    from jumplora.rundir import load_run

    return load_run(run_dir).saved_config
