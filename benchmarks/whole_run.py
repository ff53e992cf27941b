#!/usr/bin/env python
"""Whole-run wall time and memory: the same preset run by two versions of the code, side by side.

Starts `jumplora run --config configs/repro-small.yaml --method M --order O --seed S` once per code
version (each a `src/` folder put first on PYTHONPATH: e.g. a git worktree of the commit before
issue 16, and this checkout), at the same time with the same number of threads each, and samples
each process's resident set every `--every` seconds from /proc. Writes the RSS series
(`<out>.csv`: seconds, version, rss_mb) and a summary (`<out>.json`: each version's wall time from
its metrics.json, the stages' own wall times, the sampled peak RSS, the RSS after the first task's
first tenth against the peak of the rest, metrics.json's peak_memory_mb).

    git worktree add ../before <commit before issue 16>
    python benchmarks/whole_run.py --version before=../before/src --version after=src \
        --method jumplora --order 1 --seed 43 --threads 1 \
        --output before=results/runs-authors/jumplora-order1-seed43 \
        --output after=results/bench-whole-run/jumplora-order1-seed43
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _shared import ROOT, command_line, environment

PRESET = "configs/repro-small.yaml"


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """User + kernel CPU seconds of a live process (all its threads) from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"--{what} {value!r}: expected NAME=PATH")
        pairs[name] = path
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="append", required=True, help="NAME=SRC_DIR (repeatable)")
    parser.add_argument("--output", action="append", default=[], help="NAME=RUN_DIR (default results/bench-whole-run/NAME)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VAR=VALUE: an environment variable for one "
                        "version only (repeatable)")
    parser.add_argument("--args", action="append", default=[], help="NAME=ARGS: extra `jumplora run` arguments for "
                        "one version (repeatable), e.g. 'cap-off=--max-micro-batch-tokens none'")
    parser.add_argument("--method", default="jumplora")
    parser.add_argument("--order", default="1")
    parser.add_argument("--seed", default="43")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "whole_run"))
    args = parser.parse_args()
    versions = _pairs(args.version, "version")
    outputs = {name: _pairs(args.output, "output").get(name, f"results/bench-whole-run/{name}") for name in versions}
    processes = {}
    for name, src in versions.items():
        extra = dict(e.split("=", 2)[1:] for e in args.env if e.split("=", 1)[0] == name)
        env = {**os.environ, **extra, "PYTHONPATH": str(Path(src).resolve()), "OMP_NUM_THREADS": str(args.threads)}
        log = open(Path(args.out).with_name(f"whole_run-{name}.log"), "a")
        command = [str(ROOT / ".venv" / "bin" / "jumplora"), "run", "--config", PRESET, "--method", args.method,
                   "--order", args.order, "--seed", args.seed, "--output-dir", outputs[name], "--progress", "false"]
        command += [a for e in args.args if e.split("=", 1)[0] == name for a in e.split("=", 1)[1].split()]
        processes[name] = (subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.time())
    series = open(f"{args.out}.csv", "w")
    series.write("seconds,version,rss_mb\n")
    started = time.time()
    peaks = {name: 0.0 for name in versions}
    cpu = {name: None for name in versions}  # the last sample: a process's CPU time is gone once it exits
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    while any(p.poll() is None for p, _ in processes.values()):
        for name, (process, _) in processes.items():
            if process.poll() is not None:
                continue
            rss, cpu_now = _rss_mb(process.pid), _cpu_seconds(process.pid)
            if cpu_now is not None:
                cpu[name] = cpu_now
            if rss is not None:
                t = time.time() - started
                series.write(f"{t:.0f},{name},{rss:.0f}\n")
                samples[name].append((t, rss))
                peaks[name] = max(peaks[name], rss)
        series.flush()
        time.sleep(args.every)
    summary = {"command": command_line(), "environment": environment(), "threads_each": args.threads, "runs": {}}
    for name, (process, began) in processes.items():
        run_dir = ROOT / outputs[name]
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        stages = sorted((run_dir / "tasks").glob("*.json"))
        summary["runs"][name] = {
            "src": versions[name], "env": dict(e.split("=", 2)[1:] for e in args.env if e.split("=", 1)[0] == name),
            "exit_code": process.returncode, "output_dir": outputs[name],
            "process_seconds": round(time.time() - began, 1), "wall_time_s": metrics.get("wall_time_s"),
            # sampled every --every s: short of the true figure by at most that much of CPU time
            "cpu_seconds_sampled": None if cpu[name] is None else round(cpu[name], 1),
            "cpu_time_s": metrics.get("cpu_time_s"),
            "stage_wall_time_s": {p.stem: json.loads(p.read_text()).get("wall_time_s") for p in stages},
            "OA": metrics.get("OA"), "BWT": metrics.get("BWT"),
            "sampled_peak_rss_mb": round(peaks[name], 1), "peak_memory_mb": metrics.get("peak_memory_mb"),
            "rss_mb_at_quartiles_of_time": [round(samples[name][int(q * (len(samples[name]) - 1))][1], 1)
                                            for q in (0.1, 0.25, 0.5, 0.75, 1.0)] if samples[name] else None,
        }
    Path(f"{args.out}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["runs"], indent=1))


if __name__ == "__main__":
    main()
