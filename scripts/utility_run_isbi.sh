#!/usr/bin/env bash
# The utility check of issue 9 on ISBI 2012, with no leakage anywhere:
# generator trained on slices 00-04 only; synthetic masks are variations of those five masks
# and procedural layouts; evaluation tests on slices 25-29 (never seen by the generator, the
# segmenters or the curation reference).  Usage: bash scripts/utility_run_isbi.sh RUN_DIR
# Each step is skipped when its output exists, so a stopped run continues where it was.
# FAMILY=diffusion runs the same protocol with a diffusion generator (same masks, same seeds);
# GEN_STEPS sets its DPM-Solver++ steps, DIFF_STEPS its training steps. N_VAR (variations per
# real mask, 40) and N_DENSE (dense layouts, 60) size the mask set; smaller sets are subsets of
# the full one (mask i of a set is seeded by (seed, i) alone).
set -euo pipefail
R=${1:?usage: $0 RUN_DIR}
D=$(cd "$(dirname "$0")/../.." && pwd)/shared/data/isbi2012
NS=${NS:-napari-synthgen}
STEPS=${STEPS:-300}
FAMILY=${FAMILY:-pix2pix}
GEN_STEPS=${GEN_STEPS:-20}
DIFF_STEPS=${DIFF_STEPS:-2500}
N_VAR=${N_VAR:-40}
N_DENSE=${N_DENSE:-60}
mkdir -p "$R"/{real,test}/{images,masks}
for i in 00 01 02 03 04; do for s in images masks; do cp -n "$D/$s/isbi2012_train_$i.tif" "$R/real/$s/"; done; done
for i in 25 26 27 28 29; do for s in images masks; do cp -n "$D/$s/isbi2012_train_$i.tif" "$R/test/$s/"; done; done
if [ "$FAMILY" = pix2pix ]; then
  [ -e "$R/gen/latest.json" ] || $NS train --data "$R/real" --val-fraction 0 --out "$R/gen" --steps 2500 \
    --netG unet_256 --ngf 16 --ndf 32 --tile 256 --batch-size 4 --flips --rot90 --lambda-l1 20 \
    --sample-every 500 --checkpoint-every 500 --log-every 50 --seed 0
  GEN_ARGS=()
else
  # the bundled demo-diffusion's settings, on the five training slices only; a stopped run resumes
  DONE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$R/gen/latest.json" 2>/dev/null || echo 0)
  if [ "$DONE" -lt "$DIFF_STEPS" ]; then
    if [ -e "$R/gen/latest.json" ]; then $NS train --resume "$R/gen"
    else $NS train --family diffusion --data "$R/real" --val-fraction 0 --out "$R/gen" \
      --steps "$DIFF_STEPS" --tile 128 --batch-size 4 --flips --rot90 --unlabel-fraction 0.3 \
      --lr-schedule constant --checkpoint-every 250 --sample-every 500 --log-every 25 --seed 0; fi
  fi
  GEN_ARGS=(--steps "$GEN_STEPS" --sampler dpm)
fi
[ -e "$R/masks/masks.jsonl" ] || {
  $NS masks --variations-of "$R/real" --n "$N_VAR" --seed 1 --out "$R/masks"
  $NS masks --layout dense --n "$N_DENSE" --size 512 512 --seed 2 --out "$R/masks/dense"
  mv "$R"/masks/dense/*.tif "$R/masks/" && rm -r "$R/masks/dense"; }
[ -e "$R/syn/generate.jsonl" ] || $NS generate --model "$R/gen" --masks "$R/masks" --out "$R/syn" --seed 0 "${GEN_ARGS[@]}"
[ -e "$R/report/report.csv" ] || $NS report --samples "$R/syn" --reference "$R/real" --out "$R/report"
# curation by the figures: keep the samples whose score is at least the report's lower quartile
Q=$(python3 -c "import csv,sys; s=sorted(float(r['score']) for r in csv.DictReader(open(sys.argv[1]))); print(round(s[len(s)//4], 3))" "$R/report/report.csv")
echo "curation threshold (lower quartile of scores): $Q"
[ -e "$R/eval/evaluation.csv" ] || $NS evaluate --real "$R/real" --synthetic "$R/syn" --test "$R/test" \
  --steps "$STEPS" --batch-size 8 --seeds 3 --min-score "$Q" --out "$R/eval"
