#!/usr/bin/env bash
# Re-runs the RL experiments of examples/rl/RESULTS.md' shifting-observation
# protocol, then writes its tables and figure. Two budgets:
#
#   quick (inside make results, at most 8 min on 2 cores): the default run of
#          examples.rl.shifting (CartPole-v1, the calibrated budget);
#   full:  before it the calibration runs, the selection of every method's
#          setting on seeds 1000..1015 (about 30 min) and its report on seeds
#          0..31 (about 35 min), and continual MinAtar at 1M steps per visit
#          for vanilla and SWR (about 2 to 3 h per method on 2 cores, not yet
#          run: see RESULTS.md).
#
# The report reads the committed JSON of examples/rl/results/. Needs the
# [rl] and [plots] extras.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-quick}
case "$MODE" in
  quick | full) ;;
  *) echo "usage: run_results.sh [quick|full]" >&2; exit 2 ;;
esac
PY=${PY:-.venv/bin/python}
# One BLAS thread: the QR of continual backprop's fresh draws ran 400 times
# slower with OpenBLAS's threads fighting XLA's on 2 cores (examples/rl/train.py).
export OPENBLAS_NUM_THREADS=1
OUT=examples/rl/results
mkdir -p "$OUT" examples/rl/figures
start=$SECONDS
run() { echo "+ python -m $*"; "$PY" -m "$@"; }

if [[ "$MODE" == full ]]; then
  run examples.rl.shifting --calibrate --phases 5 --calibrate-steps 10000,25000,50000 \
    --seeds 16 --out "$OUT/shifting_calibration_k5.json"
  run examples.rl.shifting --calibrate --phases 10 --calibrate-steps 25000,50000,100000 \
    --seeds 16 --out "$OUT/shifting_calibration_k10.json"
  # The default protocol at the power part 2 asks for (14.6 min).
  run examples.rl.shifting --seeds 32 --out "$OUT/shifting_32_seeds.json"
  # SWR's output in the exact mode (the default) against the paper's rule.
  run examples.rl.ppo --env CartPole-v1 --total-steps 500000 --seeds 8 \
    --methods vanilla,swr --swr-coef 1e-3 --out "$OUT/heads_exact.json"
  run examples.rl.ppo --env CartPole-v1 --total-steps 500000 --seeds 8 \
    --methods swr --swr-coef 1e-3 --swr-head-coef 1e-3 --out "$OUT/heads_paper_rule.json"
  # Part 4: each method's setting chosen on selection seeds, reported on others.
  run examples.rl.selection --seeds 16 --out "$OUT/shifting_selection.json"
  run examples.rl.shifting --from-selection "$OUT/shifting_selection.json" \
    --methods vanilla,adamw,swr,l2_init,snp,redo,cbp,swr_redo --seeds 32 \
    --out "$OUT/shifting_selected.json"
  for method in vanilla swr; do
    run examples.rl.continual --steps-per-visit 1000000 --cycles 2 --seeds 3 \
      --methods "$method" --out "$OUT/continual_1m_$method.json"
  done
  # A random policy's score per game, then the 1M runs' tables (raw and
  # normalized per game) for RESULTS.md's continual MinAtar section.
  run examples.rl.scores --out "$OUT/minatar_random.json"
  "$PY" -m examples.rl.continual_report "$OUT"/continual_1m_{vanilla,swr}.json \
    --random-scores "$OUT/minatar_random.json" \
    --figure examples/rl/figures/continual_1m.png
fi
run examples.rl.shifting --out "$OUT/shifting.json"
"$PY" -m examples.rl.shifting_report \
  --calibration "$OUT/shifting_calibration_k5.json,$OUT/shifting_calibration_k10.json" \
  --selection "$OUT/shifting_selection.json" \
  --runs "$OUT/shifting.json,$OUT/shifting_32_seeds.json,$OUT/shifting_selected.json" \
  --figure examples/rl/figures/shifting.png \
  --write examples/rl/RESULTS.md
echo "examples/rl/run_results.sh $MODE: $((SECONDS - start)) s"
