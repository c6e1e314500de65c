#!/usr/bin/env bash
# Re-run every measurement the README and docs/ report, in the order they depend on each other.
# Needed after the embedded pair's weights change: the pair fingerprint changes, so the shipped
# profile must be recalibrated before the demo, the bench and the notebook can use it.
#   bash benchmarks/remeasure.sh            # about an hour on a 2-core CPU; run nothing else meanwhile
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
stamp() { echo "== $(date +%H:%M:%S) $*"; }
stamp "pair evaluation";     $PY benchmarks/evaluate_pair.py --videos 64 --out docs/pair
stamp "calibration (writes the shipped profile)"
.venv/bin/flowblend calibrate --per-prompt --num-prompts 12 --seeds 2 --trials 32
stamp "per-prompt evaluation (its own scratch store)"
$PY benchmarks/per_prompt_eval.py --out docs/per_prompt   # a fresh temporary store
stamp "oracle";              $PY benchmarks/oracle.py --steps 20 --prompts 2 --seeds 2 --trials 24 --out docs/oracle
stamp "bench";               .venv/bin/flowblend bench --num 16 --repeats 1 --oracle docs/oracle/oracle.json --out docs/bench
cp docs/bench/divergence.png docs/pair/divergence.png   # the shipped profile's curve, docs/pair
stamp "demo";                .venv/bin/flowblend demo
stamp "notebook";            $PY notebooks/run_notebook.py --inplace
stamp "done"
