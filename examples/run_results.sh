#!/usr/bin/env bash
# Re-runs every experiment of examples/RESULTS.md, then draws its figures.
# Needs the [examples] and [plots] extras and, for Fashion-MNIST, the Debian
# package dataset-fashion-mnist. About an hour on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=examples/results
mkdir -p "$OUT"
run() { echo "+ $*"; "$PY" "$@" --seeds 3 --no-progress; }

for model in mlp cnn; do
  run examples/warm_start.py --data digits --model "$model" --epochs 20 --out "$OUT/warm_start_digits_$model.json"
  run examples/continual.py --data digits --model "$model" --access full --epochs 10 --out "$OUT/continual_full_digits_$model.json"
  run examples/continual.py --data digits --model "$model" --access limited --epochs 10 --out "$OUT/continual_limited_digits_$model.json"
  run examples/generalization.py --data digits --model "$model" --epochs 40 --out "$OUT/generalization_digits_$model.json"
  run examples/generalization.py --data digits --model "$model" --epochs 40 --lr-decay --out "$OUT/generalization_lr_decay_digits_$model.json"
done
run examples/warm_start.py --data digits --model cnn_bn --epochs 20 --out "$OUT/warm_start_digits_cnn_bn.json"
# Long warm starts, closer to the paper's 100 epochs per phase.
run examples/warm_start.py --data digits --model mlp --epochs 200 --out "$OUT/warm_start_long_digits_mlp.json"
run examples/warm_start.py --data digits --model cnn --epochs 100 --out "$OUT/warm_start_long_digits_cnn.json"

run examples/warm_start.py --data fashion_mnist --model mlp --epochs 5 --out "$OUT/warm_start_fashion_mnist_mlp.json"
run examples/continual.py --data fashion_mnist --model mlp --access full --epochs 3 --out "$OUT/continual_full_fashion_mnist_mlp.json"
run examples/continual.py --data fashion_mnist --model mlp --access limited --epochs 3 --out "$OUT/continual_limited_fashion_mnist_mlp.json"
run examples/generalization.py --data fashion_mnist --model mlp --epochs 10 --out "$OUT/generalization_fashion_mnist_mlp.json"
run examples/generalization.py --data fashion_mnist --model mlp --epochs 10 --lr-decay --out "$OUT/generalization_lr_decay_fashion_mnist_mlp.json"
run examples/warm_start.py --data fashion_mnist --model cnn --epochs 5 --max-train 10000 --out "$OUT/warm_start_fashion_mnist_cnn.json"

# SWR's coefficient, swept where it is cheap (the paper sweeps 1e-4 to 1).
for coef in 1e-1 1e-2 1e-3; do
  for model in mlp cnn; do
    run examples/warm_start.py --data digits --model "$model" --epochs 20 --methods swr --swr "$coef" --swr-classifier "$coef" --out "$OUT/sweep_warm_start_digits_${model}_$coef.json"
  done
  run examples/warm_start.py --data fashion_mnist --model mlp --epochs 5 --methods swr --swr "$coef" --swr-classifier "$coef" --out "$OUT/sweep_warm_start_fashion_mnist_mlp_$coef.json"
done

"$PY" examples/summarize_results.py "$OUT"/*.json --write examples/RESULTS.md
"$PY" examples/plot_results.py $(ls "$OUT"/*.json | grep -v /sweep_) --out-dir examples/figures
