#!/usr/bin/env bash
# Distil the bundled demo-diffusion into a few-step model on the ISBI 2012 pairs it was
# trained on (progressive distillation, scripts/distill_demo.yaml), in the background.
#
#   bash scripts/distill_demo.sh RUN_DIR [DATA_DIR] [CONFIG]
#
# CONFIG defaults to scripts/distill_demo.yaml (demo-diffusion, 32 -> 2 steps);
# scripts/distill_demo_1step.yaml is one more round from demo-diffusion-fast (2 -> 1 step).
# RUN_DIR is created (outside the repository, e.g. /work/runs/distill/demo-fast); the log is
# RUN_DIR.log. Resume a stopped run with the same command: it continues from RUN_DIR's last
# checkpoint. Pack the result with: python scripts/pack_diffusion_fast.py RUN_DIR
set -euo pipefail
RUN=${1:?usage: distill_demo.sh RUN_DIR [DATA_DIR] [CONFIG]}
DATA=${2:-../shared/data/isbi2012}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=$(realpath "${3:-$HERE/scripts/distill_demo.yaml}")
PY=${PYTHON:-python}
RESUME=()
if [ -f "$RUN/latest.json" ]; then RESUME=(--resume "$RUN"); fi
mkdir -p "$(dirname "$RUN")"
# the run imports from a copy of the code and config made when it first started, so that
# editing the checkout meanwhile cannot break it (modules are imported lazily) nor change it
CODE="$RUN.code"
if [ ! -d "$CODE" ]; then
  mkdir -p "$CODE"
  cp -r "$HERE/src" "$CODE/src"
  cp "$CONFIG" "$CODE/$(basename "$CONFIG")"
  git -C "$HERE" rev-parse HEAD > "$CODE/commit" 2>/dev/null || true
fi
cd "$HERE"
PYTHONPATH="$CODE/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 nohup "$PY" -m napari_synthgen \
  train --config "$CODE/$(basename "$CONFIG")" --data "$DATA" --out "$RUN" "${RESUME[@]}" \
  >> "$RUN.log" 2>&1 &
echo "started pid $! -> $RUN (log $RUN.log)"
