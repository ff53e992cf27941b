#!/usr/bin/env bash
# Every run of the reduced-scale reproduction study (docs/reproduction.md), one after another, on
# the preset configs/repro-small.yaml. Per seed: `single` first (FWT needs it beside the CL runs),
# then the CL methods. ELLA's λ is chosen once, by the ELLA authors' balancing rule, from IncLoRA's
# order-1 seed-42 run (`jumplora ella-lambda`), written to results/ella_lambda.md and reused for
# every later ELLA run. Finished runs are skipped; an interrupted one resumes at its last finished
# task. Override the study with SEEDS, ORDERS, METHODS, e.g. SEEDS=43 METHODS="single inclora".
# JOBS=2 runs two at a time, each with half the cores (torch threads): on the 2-core machine that
# gave 1.15x the throughput of one run on both cores (a run then takes ~49 min instead of ~28).
set -euo pipefail
cd "$(dirname "$0")/.."
JUMPLORA=${JUMPLORA:-.venv/bin/jumplora}
SEEDS=${SEEDS:-"42 43 44"}
ORDERS=${ORDERS:-1}
METHODS=${METHODS:-"single inclora jumplora ella jumplora+ella"}
JOBS=${JOBS:-1}
if [ "$JOBS" -gt 1 ]; then
  threads=$(( $(nproc) / JOBS ))
  export OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 ))
fi
LAMBDA_FILE=results/ella_lambda.md
mkdir -p results/logs

ella_lambda() {
  if [ ! -f "$LAMBDA_FILE" ]; then
    "$JUMPLORA" ella-lambda results/runs/inclora-order1-seed42 > "$LAMBDA_FILE.tmp"
    mv "$LAMBDA_FILE.tmp" "$LAMBDA_FILE"
  fi
  sed -n 's/^suggested ella_lambda: //p' "$LAMBDA_FILE"
}

for order in $ORDERS; do
  for seed in $SEEDS; do
    for method in $METHODS; do
      name=$method-order$order-seed$seed
      out=results/runs/$name
      if grep -q '"finished": true' "$out/state.json" 2>/dev/null; then
        echo "skip $name (finished)"
        continue
      fi
      extra=()
      # λ is derived from IncLoRA's seed-42 run: let that run finish first.
      case $method in *ella*) [ -f "$LAMBDA_FILE" ] || wait; extra=(--ella-lambda "$(ella_lambda)") ;; esac
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
      echo "run $name ${extra[*]}"
      /usr/bin/time -v "$JUMPLORA" run --config configs/repro-small.yaml --method "$method" \
        --order "$order" --seed "$seed" --output-dir "$out" "${extra[@]}" --progress false \
        > "results/logs/$name.log" 2>&1 &
    done
  done
done
# A failed run shows in its log and stays unfinished; the next call of this script resumes it.
wait
