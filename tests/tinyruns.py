"""Real runs of a tiny model saved to a folder (so that config.yaml names a model that loads again),
with the run's own weights after each stage: what `export` and `forget` rebuild is compared with them."""

from pathlib import Path

import torch

import jumplora.train
from jumplora.config import RunConfig
from jumplora.models import load_model
from jumplora.testing import save_tiny, tiny_llama, tiny_t5
from jumplora.train import run_continual

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "CL_Benchmark"
BUILD = {"causal": tiny_llama, "seq2seq": tiny_t5}


def tiny_run(tmp_path, kind, method="jumplora", order="cb,copa", **overrides):
    """A real run whose config.yaml names a saved tiny model, and the run's own weights after each task."""
    model_dir = save_tiny(BUILD[kind](seed=0), tmp_path / f"tiny-{kind}")
    config = RunConfig(
        method=method, order=order, data_dir=str(DATA), seed=42, model=str(model_dir), train_per_class=4,
        val_per_class=2, test_per_class=2, max_input_tokens=320, batch_size=4, micro_batch_size=2,
        learning_rate=5e-3, eval_batch_size=8, progress=False, output_dir=str(tmp_path / f"run-{kind}-{method}"),
        ella_lambda="100", **overrides,
    )
    loaded = load_model(model_dir, progress=False)
    after = {}
    done = jumplora.train.Logger.task_done

    def snapshot(self, name, evaluations, update):  # the model as the run left it after each stage
        after[name] = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
        return done(self, name, evaluations, update)

    jumplora.train.Logger.task_done = snapshot
    try:
        result = run_continual(config, loaded=loaded)
    finally:
        jumplora.train.Logger.task_done = done
    return result.run_dir, after, model_dir


def logits(model, kind):
    ids = torch.tensor([[5, 40, 77, 120, 9, 200]])
    with torch.no_grad():
        if kind == "seq2seq":
            return model(input_ids=ids, decoder_input_ids=torch.tensor([[0, 50, 60]])).logits
        return model(input_ids=ids).logits
