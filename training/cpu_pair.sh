#!/usr/bin/env bash
# Retrain the embedded pair toy-two-digits on a laptop CPU (issue #25): the quality encoder, then Large
# (64 tokens, 3.9 M parameters) and its Smalls in lockstep for BUDGET_S seconds of wall time (default 4200,
# about 70 minutes on two cores), saved every minute and resumable: run it again with INIT=<the work
# folder> to continue every model. The weights land in WORK/multi/; copy large/, the chosen small-*/ (as
# small/) and the encoder into adaptive/toy/weights/two-digits/ to ship them.
#
#   bash training/cpu_pair.sh                       # from scratch (encoder ~10 min, then the pair)
#   INIT=/tmp/cpu-pair BUDGET_S=1800 bash training/cpu_pair.sh   # continue a run for 30 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/cpu-pair}
BUDGET_S=${BUDGET_S:-4200}
INIT_ARGS=()
if [ -n "${INIT:-}" ]; then INIT_ARGS=(--init "$INIT"); fi
"$PY" training/candidates.py --device cpu --batch 32 --variants multi --recipes compact,compact-expert \
  --large-config compact --budget-s "$BUDGET_S" --frontier-prompts 1 --frontier-seeds 1 --frontier-steps 4 \
  --frontier-stride 2 --frontier-timeout-s 120 --encoder-batch 64 --out "$WORK/out" --work "$WORK/work" \
  "${INIT_ARGS[@]}"
echo "weights in $WORK/work/multi (large/, small-compact/, small-compact-expert/, encoder.*)"
