#!/usr/bin/env bash
# Issue 17's ISBI setting with a generator that starts from other EM data: a diffusion model
# trained on the 20 VNC dense slices (../shared/data/vnc_stack1, no ISBI slice; study use only,
# its licence keeps it out of the package), then fine-tuned on ISBI 00-04 plus the unlabelled
# 05-24 by scripts/utility_study.sh isbi, as the VNC and mitochondria settings fine-tune the
# demo. Same generator steps in all as the from-scratch run (PRE_STEPS + DIFF_STEPS = 2500).
#
#   bash scripts/utility_isbi_pretrained.sh RUN_DIR     (about 75 minutes on 2 CPU cores)
#
# Knobs (environment): PRE_STEPS (1500), and utility_study.sh's (here DIFF_STEPS 1000,
# GEN_STEPS 12, FUSION shifted, N_VAR 4, N_LIKE 20, SIZES 2, SEG_STEPS 1000, GUIDANCE 1).
set -euo pipefail
R=${1:?usage: $0 RUN_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(cd "$HERE/../.." && pwd)/shared/data
NS=${NS:-napari-synthgen}
PRE_STEPS=${PRE_STEPS:-1500}
P=$R/pretrain
DONE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$P/latest.json" 2>/dev/null || echo 0)
if [ "$DONE" -lt "$PRE_STEPS" ]; then
  if [ -e "$P/latest.json" ]; then $NS train --resume "$P" --steps "$PRE_STEPS"
  else $NS train --family diffusion --data "$SHARED/vnc_stack1" --val-fraction 0 --out "$P" \
    --steps "$PRE_STEPS" --tile 128 --batch-size 4 --flips --rot90 --encoding onehot \
    --unlabel-fraction 0.3 --cond-dropout 0.1 --lr-schedule constant --checkpoint-every 250 \
    --sample-every 500 --log-every 25 --seed 0; fi
fi
INIT=$(printf '%s/G_step_%07d.safetensors' "$P" "$PRE_STEPS") \
  DIFF_STEPS=${DIFF_STEPS:-1000} GEN_STEPS=${GEN_STEPS:-12} FUSION=${FUSION:-shifted} \
  N_VAR=${N_VAR:-4} N_LIKE=${N_LIKE:-20} SIZES=${SIZES:-2} SEG_STEPS=${SEG_STEPS:-1000} \
  SEEDS=${SEEDS:-3} GUIDANCE=${GUIDANCE:-1} bash "$HERE/utility_study.sh" isbi "$R/study"
