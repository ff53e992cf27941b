#!/usr/bin/env bash
# Every run of a reduced-scale reproduction study (docs/reproduction.md), skipping finished runs;
# an interrupted one resumes at its last finished task. Two studies (STUDY=...):
#   authors (default) the authors' settings (configs/repro-small.yaml, their split in
#                     ../shared/CL_Benchmark_dev): results/runs-authors/, logs in results/logs-authors/
#   v0                the first study's settings (configs/repro-small-v0.yaml): results/runs/
# Per seed the CL methods, then `single` (FWT reads it beside the CL runs). ELLA's λ is chosen once
# per study by the ELLA authors' balancing rule from IncLoRA's order-1 seed-42 run of that study
# (`jumplora ella-lambda`), written to the study's ella_lambda file and reused for every ELLA run;
# ELLA runs wait until it exists. Select a part with SEEDS, ORDERS, METHODS, and extra run options
# with EXTRA and a name SUFFIX (e.g. the scale point: EXTRA="--train-per-class 400" SUFFIX=-x4).
# JOBS=2 runs two at a time with half the cores (torch threads) each.
# The code a study ran with is its runs' environment.json git_commit; to keep the code of a running
# study fixed while developing, run it from a worktree: JUMPLORA_SRC=/path/to/worktree/src.
set -euo pipefail
cd "$(dirname "$0")/.."
JUMPLORA=${JUMPLORA:-.venv/bin/jumplora}
if [ -n "${JUMPLORA_SRC:-}" ]; then export PYTHONPATH="$JUMPLORA_SRC"; fi
STUDY=${STUDY:-authors}
SEEDS=${SEEDS:-"42 43 44"}
ORDERS=${ORDERS:-1}
METHODS=${METHODS:-"inclora jumplora ella jumplora+ella single"}
JOBS=${JOBS:-1}
EXTRA=${EXTRA:-}
SUFFIX=${SUFFIX:-}
case $STUDY in
  authors) PRESET=configs/repro-small.yaml RUNS=results/runs-authors LOGS=results/logs-authors
           LAMBDA_FILE=results/ella_lambda-authors.md CONVENTION=authors ;;
  v0)      PRESET=configs/repro-small-v0.yaml RUNS=results/runs LOGS=results/logs
           LAMBDA_FILE=results/ella_lambda-v0.md CONVENTION=unscaled-sum ;;
  *) echo "unknown STUDY $STUDY (authors or v0)" >&2; exit 2 ;;
esac
if [ "$JOBS" -gt 1 ]; then
  threads=$(( $(nproc) / JOBS ))
  export OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 ))
fi
mkdir -p "$LOGS"

ella_lambda() {
  if [ ! -f "$LAMBDA_FILE" ]; then
    "$JUMPLORA" ella-lambda "$RUNS/inclora-order1-seed42" --convention "$CONVENTION" > "$LAMBDA_FILE.tmp"
    mv "$LAMBDA_FILE.tmp" "$LAMBDA_FILE"
  fi
  sed -n 's/^suggested ella_lambda: //p' "$LAMBDA_FILE"
}

lambda_source_done() { grep -q '"finished": true' "$RUNS/inclora-order1-seed42/state.json" 2>/dev/null; }

for order in $ORDERS; do
  for seed in $SEEDS; do
    for method in $METHODS; do
      name=$method-order$order-seed$seed$SUFFIX
      out=$RUNS/$name
      if grep -q '"finished": true' "$out/state.json" 2>/dev/null; then
        echo "skip $name (finished)"
        continue
      fi
      extra=()
      case $method in
        *ella*)
          # λ comes from this study's IncLoRA seed-42 run: wait for it
          while ! lambda_source_done; do
            if [ "$(jobs -rp | wc -l)" -gt 0 ]; then wait -n || true; else
              echo "ELLA needs $RUNS/inclora-order1-seed42 finished first" >&2; exit 1; fi
          done
          extra=(--ella-lambda "$(ella_lambda)") ;;
      esac
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
      echo "run $name ${extra[*]} $EXTRA"
      # shellcheck disable=SC2086
      /usr/bin/time -v "$JUMPLORA" run --config "$PRESET" --method "$method" \
        --order "$order" --seed "$seed" --output-dir "$out" "${extra[@]}" $EXTRA --progress false \
        >> "$LOGS/$name.log" 2>&1 &
    done
  done
done
# A failed run shows in its log and stays unfinished; the next call of this script resumes it.
wait
