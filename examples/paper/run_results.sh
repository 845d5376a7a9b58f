#!/usr/bin/env bash
# Re-runs every experiment of examples/paper/RESULTS.md, then writes its tables
# and figures: `make results`. Needs the [examples] and [plots] extras and, for
# Fashion-MNIST, the Debian package dataset-fashion-mnist. Each JSON records
# its versions and wall time; this script prints the total at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=examples/paper/results
FIGURES=examples/paper/figures
mkdir -p "$OUT" "$FIGURES"
# Every file of the report comes from this run: nothing stale stays behind.
rm -f "$OUT"/*.json "$FIGURES"/*.png
start=$SECONDS
run() { echo "+ python -m $*"; "$PY" -m "$@"; }

# 1. Random-label tasks (defaults: Fashion-MNIST, 1,200 images, 20 tasks,
#    5 seeds), and the pilot that calibrated --steps-per-task.
run examples.paper.random_labels --calibrate --steps-per-task 4000 \
  --no-progress --out "$OUT/random_labels_calibration.json"
run examples.paper.random_labels --no-progress --workers 2 \
  --out "$OUT/random_labels_fashion_mnist.json"
# The baselines get a smaller sweep than SWR (4 coefficients above): L2 and L2
# Init 2 values each with the main run, Shrink & Perturb 3.
run examples.paper.random_labels --no-progress --workers 2 \
  --methods l2,l2_init,snp --l2 1e-3 --l2-init 1e-3 --snp 0.5,0.8 \
  --out "$OUT/random_labels_baseline_sweep_fashion_mnist.json"

# 2. Warm start trained to 99% training accuracy (Ash & Adams), Fashion-MNIST
#    MLP on a fixed 10,000-image training subset, 5 seeds; offline (half,
#    then all, SWR's coefficient swept) and online (5 rounds).
CONVERGED=(--data fashion_mnist --max-train 10000 --until-train-acc 0.99
  --epochs 300 --seeds 5 --workers 2 --no-progress)
run examples.paper.warm_start "${CONVERGED[@]}" --swr 1e-4,1e-3,1e-2 \
  --out "$OUT/warm_start_converged_fashion_mnist_mlp.json"
run examples.paper.warm_start "${CONVERGED[@]}" --online-rounds 5 \
  --out "$OUT/warm_start_online_fashion_mnist_mlp.json"

# 3. The paper's Figure 1: proportional vs weights-only scaling.
run examples.paper.figure1 --out-json "$OUT/figure1_fashion_mnist_mlp.json" \
  --out-png "$FIGURES/figure1_fashion_mnist_mlp.png"

# 4. SWR beyond chains (docs/how_it_works.md): five non-chain models, 500
#    Adam steps each, about 3 minutes.
run examples.paper.beyond_chains --out "$OUT/beyond_chains.json" \
  --figure "$FIGURES/beyond_chains.png"

# 5. The paper's protocols at fixed budgets, 5 seeds.
FIXED=(--seeds 5 --workers 2 --no-progress)
run examples.paper.warm_start --data digits --model mlp --epochs 20 "${FIXED[@]}" \
  --out "$OUT/warm_start_digits_mlp.json"
run examples.paper.warm_start --data digits --model cnn --epochs 20 "${FIXED[@]}" \
  --out "$OUT/warm_start_digits_cnn.json"
for access in full limited; do
  # 10 chunks of ~126 digits: batches of 64 (a chunk is never < a batch).
  run examples.paper.continual --data digits --access "$access" --epochs 10 \
    --batch-size 64 "${FIXED[@]}" --out "$OUT/continual_${access}_digits_mlp.json"
done
run examples.paper.generalization --data digits --epochs 40 "${FIXED[@]}" \
  --out "$OUT/generalization_digits_mlp.json"
run examples.paper.generalization --data digits --epochs 40 --lr-decay \
  "${FIXED[@]}" --out "$OUT/generalization_lr_decay_digits_mlp.json"
run examples.paper.generalization --data fashion_mnist --epochs 10 "${FIXED[@]}" \
  --out "$OUT/generalization_fashion_mnist_mlp.json"
run examples.paper.generalization --data fashion_mnist --epochs 10 --lr-decay \
  "${FIXED[@]}" --out "$OUT/generalization_lr_decay_fashion_mnist_mlp.json"

# Committed results stay small: per-epoch and per-step traces thinned and
# rounded; every summary a table reads is kept as written.
"$PY" -m examples.paper.compact_results "$OUT"/*.json
"$PY" -m examples.paper.summarize_results "$OUT"/*.json --write examples/paper/RESULTS.md
"$PY" -m examples.paper.plot_results $(ls "$OUT"/*.json | grep -v -e /sweep_ -e /figure1_ -e _calibration -e /beyond_chains) \
  --out-dir "$FIGURES"
"$PY" docs/make_figures.py
echo "make results: $((SECONDS - start)) s"
