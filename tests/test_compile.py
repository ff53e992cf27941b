"""`compile: blocks` (compile.py): the transformer blocks through torch.compile during training.

The blocks found are the model's repeated layers (no more, no fewer); a compiled run trains what the
eager run trains (fp32, relative 1e-4 on every step's loss, the same accuracy matrix); where the
compiler does not work the run says so in one line and trains eager.
"""

import json
import warnings

import pytest
import torch

import jumplora.compile as compile_module
from jumplora.compile import compile_blocks, compiled_blocks, transformer_blocks
from jumplora.testing import tiny_llama, tiny_t5
from tinyruns import tiny_run


def test_the_blocks_are_the_repeated_layers_of_each_stack():
    llama = tiny_llama(seed=0).model
    assert transformer_blocks(llama) == list(llama.model.layers)
    t5 = tiny_t5(seed=0).model
    blocks = transformer_blocks(t5)
    assert blocks == list(t5.encoder.block) + list(t5.decoder.block)
    assert len(blocks) >= 4  # the T5 block's inner `layer` lists (of unlike modules) are not blocks


def test_compiled_blocks_are_eager_again_after_the_task_and_keep_their_parameters():
    model = tiny_llama(seed=0).model
    names = [name for name, _ in model.named_parameters()]
    with compiled_blocks(model, "blocks") as count:
        assert count == len(model.model.layers)
        assert all(block._compiled_call_impl is not None for block in model.model.layers)
        assert [name for name, _ in model.named_parameters()] == names
    assert all(block._compiled_call_impl is None for block in model.model.layers)
    with compiled_blocks(model, "none") as count:
        assert count == 0 and all(block._compiled_call_impl is None for block in model.model.layers)
    with pytest.raises(ValueError, match="unknown compile mode 'all'"):
        compile_blocks(model, "all")


def test_without_a_working_compiler_the_run_warns_once_and_stays_eager(monkeypatch):
    monkeypatch.setattr(compile_module, "probe", lambda: "InvalidCxxCompiler: No working C++ compiler found")
    model = tiny_llama(seed=0).model
    with pytest.warns(UserWarning, match=r"^compile: blocks: torch.compile does not work here \(InvalidCxx"):
        with compiled_blocks(model, "blocks") as count:
            assert count == 0
    assert all(block._compiled_call_impl is None for block in model.model.layers)


def _losses(run_dir):
    return [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]


@pytest.mark.skipif(compile_module.probe() is not None, reason="torch.compile does not work on this machine")
def test_a_compiled_run_trains_what_the_eager_run_trains(tmp_path):
    runs = {}
    for mode in ("blocks", "none"):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="compile: blocks")  # no fallback: the compiled path ran
            runs[mode], _, _ = tiny_run(tmp_path / mode, "causal", method="jumplora", precision="fp32", compile=mode)
    compiled, eager = _losses(runs["blocks"]), _losses(runs["none"])
    assert len(compiled) == len(eager) > 2 and any(r["gamma"] > 0 for r in eager)
    for got, want in zip(compiled, eager):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), (got["task"], got["step"])
        assert got.get("thresholds") == pytest.approx(want.get("thresholds"), rel=1e-4)
    assert (runs["blocks"] / "accuracy_matrix.csv").read_text() == (runs["none"] / "accuracy_matrix.csv").read_text()
    torch._dynamo.reset()
