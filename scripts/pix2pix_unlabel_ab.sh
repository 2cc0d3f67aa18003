#!/usr/bin/env bash
# Does --unlabel-fraction help pix2pix on masks with background? Two short pix2pix runs on
# ISBI 00-26 that differ only in --unlabel-fraction (0 and 0.3), then both paint the same
# sparse layouts (organelles on background) and the background is measured: its periodic-peak
# excess and spectrum distance against real EM (quality.py), and its grey-level spread.
# Usage: bash scripts/pix2pix_unlabel_ab.sh RUN_DIR   (about 15 minutes on a 2-core CPU)
set -euo pipefail
R=${1:?usage: $0 RUN_DIR}
D=$(cd "$(dirname "$0")/../.." && pwd)/shared/data/isbi2012
NS=${NS:-napari-synthgen}
STEPS=${STEPS:-2000}
mkdir -p "$R"
for U in 0 0.3; do
  [ -e "$R/u$U/latest.json" ] || $NS train --data "$D" --out "$R/u$U" --steps "$STEPS" \
    --netG unet_256 --ngf 16 --ndf 32 --tile 256 --batch-size 4 --flips --rot90 --lambda-l1 20 \
    --unlabel-fraction "$U" --sample-every 1000 --checkpoint-every 1000 --log-every 100 --seed 0
done
[ -e "$R/masks/masks.jsonl" ] || $NS masks --layout sparse --n 6 --size 512 512 --seed 3 --out "$R/masks"
for U in 0 0.3; do
  [ -e "$R/syn_u$U/generate.jsonl" ] || $NS generate --model "$R/u$U" --masks "$R/masks" \
    --out "$R/syn_u$U" --seed 0
done
python3 "$(dirname "$0")/background_figures.py" "$D" "$R/syn_u0" "$R/syn_u0.3"
