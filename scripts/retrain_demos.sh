#!/usr/bin/env bash
# Issue 17 part 6: retrain the bundled demos with what the A/Bs and the utility study say helps.
#
#   pix2pix    8000 steps from scratch on ISBI 00-26 with --unlabel-fraction 0.3 (background
#              becomes "unlabelled tissue": less periodic pattern, real grain; docs/design.md)
#   diffusion  the bundled demo fine-tuned (--init-from demo-diffusion) with the ISBI training
#              images also given as raw images (--unlabeled): it learns the null condition, so
#              classifier-free guidance (--guidance, default 3 for such models) works with it
#
#   pix2pix-l1 the pix2pix demo's run with the first demo's L1 schedule: weight 100 (constant
#              rate) to step 3646, then 10 with the linear decay over the second half, with
#              --unlabel-fraction 0.3 throughout (the model card's A/B: does the long weight-100
#              phase give the first demo's finer grain back?)
#
#   bash scripts/retrain_demos.sh RUN_DIR [diffusion|pix2pix|pix2pix-l1]   (both by default; background:
#        about 40 + 45 min on 2 CPU cores; a stopped run resumes where it was)
# Then pack: python scripts/pack_demo_model.py RUN_DIR/pix2pix (and --classes-from the data),
# python scripts/pack_diffusion_demo.py RUN_DIR/diffusion; the model cards say the rest.
set -euo pipefail
R=${1:?usage: $0 RUN_DIR [diffusion|pix2pix]}
WHICH=${2:-both}
D=${ISBI:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/isbi2012}
NS=${NS:-napari-synthgen}
P2P_STEPS=${P2P_STEPS:-8000}
DIFF_STEPS=${DIFF_STEPS:-1000}
mkdir -p "$R/raw"
for i in $(seq -f %02g 0 26); do cp -n "$D/images/isbi2012_train_$i.tif" "$R/raw/"; done

step() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$1/latest.json" 2>/dev/null || echo 0; }

if [[ "$WHICH" == both || "$WHICH" == diffusion ]] && [ "$(step "$R/diffusion")" -lt "$DIFF_STEPS" ]; then
  if [ -e "$R/diffusion/latest.json" ]; then $NS train --resume "$R/diffusion" --steps "$DIFF_STEPS"
  else $NS train --family diffusion --data "$D" --out "$R/diffusion" --init-from demo-diffusion \
    --steps "$DIFF_STEPS" --tile 128 --batch-size 4 --flips --rot90 --unlabel-fraction 0.3 \
    --unlabeled "$R/raw" --unlabeled-share 0.5 --lr-schedule constant --checkpoint-every 250 \
    --sample-every 250 --log-every 25 --seed 0; fi
fi
if [[ "$WHICH" == both || "$WHICH" == pix2pix ]] && [ "$(step "$R/pix2pix")" -lt "$P2P_STEPS" ]; then
  if [ -e "$R/pix2pix/latest.json" ]; then $NS train --resume "$R/pix2pix" --steps "$P2P_STEPS"
  else $NS train --data "$D" --out "$R/pix2pix" --steps "$P2P_STEPS" --netG unet_256 --ngf 16 \
    --ndf 32 --tile 256 --batch-size 4 --flips --rot90 --lambda-l1 10 --unlabel-fraction 0.3 \
    --sample-every 1000 --checkpoint-every 500 --log-every 50 --seed 0; fi
fi
if [ "$WHICH" = pix2pix-l1 ]; then
  L1=$R/pix2pix_l1; P2P=(--netG unet_256 --ngf 16 --ndf 32 --tile 256 --batch-size 4 --flips
    --rot90 --unlabel-fraction 0.3 --sample-every 1000 --checkpoint-every 500 --log-every 50)
  if [ "$(step "$L1")" -lt 3646 ]; then
    if [ -e "$L1/latest.json" ]; then $NS train --resume "$L1" --steps 3646
    else $NS train --data "$D" --out "$L1" --steps 3646 --lambda-l1 100 --decay-start 1 \
      "${P2P[@]}" --seed 0; fi
  fi
  if [ "$(step "$L1")" -lt "$P2P_STEPS" ]; then
    $NS train --resume "$L1" --steps "$P2P_STEPS" --lambda-l1 10 --decay-start 0.5
  fi
fi
echo "done: $R ($WHICH)"
