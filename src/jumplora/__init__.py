"""JumpLoRA: continual learning with JumpReLU-gated sparse LoRA adapters.

    from jumplora import RunConfig, run_continual
    result = run_continual(RunConfig(method="jumplora+ella", order="1", data_dir="CL_Benchmark"))
    print(result.metrics["OA"])
"""

__version__ = "0.1.0"

_LAZY = {
    "RunConfig": "jumplora.config",
    "run_continual": "jumplora.train",
    "RunResult": "jumplora.train",
    "AdapterConfig": "jumplora.injection",
    "inject_adapters": "jumplora.injection",
    "LoRALinear": "jumplora.adapter",
    "symmetric_jumprelu": "jumplora.gate",
    "TaskUpdate": "jumplora.updates",
    "load_model": "jumplora.models",
    "compute_metrics": "jumplora.metrics",
    "load_run": "jumplora.rundir",
}


def __getattr__(name):
    # lazy: `import jumplora` stays light for the `jumplora data` command
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jumplora' has no attribute {name!r}")


__all__ = list(_LAZY)
