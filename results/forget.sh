#!/usr/bin/env bash
# The leave-one-task-out evaluations of docs/reproduction.md: `jumplora forget` of each task of the
# study's order-1 runs (RUNS, default the seed-42 IncLoRA and JumpLoRA+IncLoRA runs), one at a time,
# into results/forget-authors/RUN-forget-TASK; a folder already written is skipped.
#   OMP_NUM_THREADS=1 results/forget.sh     # one core, beside a study run on the other
set -euo pipefail
cd "$(dirname "$0")/.."
JUMPLORA=${JUMPLORA:-.venv/bin/jumplora}
RUNS=${RUNS:-"inclora-order1-seed42 jumplora-order1-seed42"}
TASKS=${TASKS:-"dbpedia amazon yahoo agnews"}
OUT=results/forget-authors
mkdir -p "$OUT"
for task in $TASKS; do
  for run in $RUNS; do
    out=$OUT/$run-forget-$task
    if [ -f "$out/forget.json" ]; then echo "skip $out"; continue; fi
    rm -rf "$out"  # an interrupted one: forget.json is its last file
    /usr/bin/time -v "$JUMPLORA" forget "results/runs-authors/$run" --task "$task" --out "$out" \
      > "$OUT/$run-forget-$task.log" 2>&1
    echo "done $out"
  done
done
