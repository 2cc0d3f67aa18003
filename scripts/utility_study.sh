#!/usr/bin/env bash
# Issue 17's study: does a generator that also learned from unlabelled slices make a segmenter
# better than the few real pairs alone? One setting per run, no leakage anywhere:
#
#   isbi  ISBI 2012: labelled 00-04, unlabelled 05-24 (generator only), test 25-29
#   vnc   ../shared/data/vnc_stack1 dense masks: labelled 00-04, unlabelled 05-14, test 15-19
#         (contiguous blocks of serial sections, so test slices are not neighbours of the
#         labelled ones)
#   mito  the same VNC split with masks_mito (class 0 = tissue that is not a mitochondrion)
#         (TEST10=1, vnc and mito: unlabelled 05-09, test 10-19; 5 test slices leave about
#         ±0.04 mitochondria Dice of a study's interval, docs/utility.md)
#   folders  your own organelle data: LABELLED=DIR (paired: images/, masks/) RAW=DIR (raw
#         images, generator only) TEST=DIR (paired, never seen by the generator), READ_AS
#         (how the masks are read: auto, or binary for 0/255 masks); FAMILY defaults to
#         pix2pix here (the steadier recipe on the mitochondria, 6 minutes of training)
#
#   bash scripts/utility_study.sh SETTING RUN_DIR        (run it in the background: hours on 2
#                                                          CPU cores; see docs/unlabeled.md)
#
# Steps (each skipped when its output exists, so a stopped run continues where it was; the
# generator resumes from its last checkpoint): the diffusion generator on the labelled pairs
# plus the unlabelled slices (--unlabeled), synthetic masks (variations of the labelled masks
# and layouts calibrated on them, masks --like), generate, report, then
# evaluate --real-sizes 1,2,5 (real only against real + synthetic at each size; paired
# differences with confidence intervals; the real-only arm's validation curve).
# Knobs (environment): DIFF_STEPS (generator steps, 3000), INIT (the model the generator is
# fine-tuned from, --init-from: demo-diffusion for vnc and mito, whose ISBI training slices are
# not VNC test slices; none for isbi, whose test slices 25-29 the demo saw; "none" trains from
# random weights), UNLABELED (1: give the unlabelled slices, 0: the labelled-only baseline
# generator), GUIDANCE (classifier-free guidance weight: 3 for mito, whose masks a generator
# follows only weakly at 1 (mitochondria drawn as plain tissue); 1 for isbi and vnc),
# GUIDANCE_WHERE (labelled, generate's default: guidance only inside the mask's objects, class
# 0 unguided, for mito, whose tissue guidance turns blotchy; the same image as everywhere for
# the dense settings), GEN_STEPS (DPM-Solver++ steps, 20), FUSION (multidiffusion), N_VAR (variations per SIZE x SIZE piece of a labelled
# mask, 5), N_LIKE (calibrated layouts, 40), SIZE (synthetic mask side, 512), SEG_STEPS (segmenter
# steps, 1500), SEEDS (3), SIZES (1,2,5), EVALUATE (1; 0 stops after report: a generator A/B),
# FAMILY (diffusion; pix2pix trains unet_128, ngf 32, ndf 32, 128-px tiles, fp32, with an
# unconditional discriminator on the unlabelled slices (docs/unlabeled.md), from random
# weights, DIFF_STEPS steps; INIT, GUIDANCE, GUIDANCE_WHERE, GEN_STEPS and FUSION do not apply),
# NOISE_NC (pix2pix: noise channels beside the mask, train --noise-nc; 0, the earlier runs'),
# NOISE_SCALE (pix2pix: pixels per noise value, train --noise-scale; 1), OBJECT_SHARE (share
# of the generator's crops placed over an object, train --object-share; 0), LOSS (evaluate's
# segmenter loss, --loss: weighted_ce, the loss of every study before 7 December 2026, or
# dice_ce, for organelle masks),
# READ_AS (--read-as of every command reading the labelled and test masks: auto), DEVICE
# (--device of every command, e.g. cuda; unset: each command's default), EVAL_ARGS (more
# evaluate flags, e.g. "--synthetic-ignore 0" or "--base 32").
set -euo pipefail
SETTING=${1:?usage: $0 isbi|vnc|mito|folders RUN_DIR}
R=${2:?usage: $0 isbi|vnc|mito|folders RUN_DIR}
SHARED=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
NS=${NS:-napari-synthgen}
PY=${PY:-python}  # the environment's Python (it has tifffile)
DIFF_STEPS=${DIFF_STEPS:-3000}
UNLABELED=${UNLABELED:-1}
GEN_STEPS=${GEN_STEPS:-20}
FUSION=${FUSION:-multidiffusion}
N_VAR=${N_VAR:-5}
N_LIKE=${N_LIKE:-40}
SIZE=${SIZE:-512}
SEG_STEPS=${SEG_STEPS:-1500}
SEEDS=${SEEDS:-3}
SIZES=${SIZES:-1,2,5}
READ_AS=${READ_AS:-auto}
if [ "$SETTING" = folders ]; then FAMILY=${FAMILY:-pix2pix}; else FAMILY=${FAMILY:-diffusion}; fi

case "$SETTING" in
  isbi) SRC=$SHARED/isbi2012; IMG=images; MSK=masks; PRE=isbi2012_train_
        LAB="00 01 02 03 04"; UNL=$(seq -f %02g 5 24); TEST="25 26 27 28 29"
        GEN_ARGS=(--encoding onehot --unlabel-fraction 0.3) ;;
  vnc)  SRC=$SHARED/vnc_stack1; IMG=images; MSK=masks; PRE=vnc_
        LAB="00 01 02 03 04"; UNL=$(seq -f %02g 5 14); TEST="15 16 17 18 19"
        GEN_ARGS=(--encoding onehot --unlabel-fraction 0.3) ;;
  mito) SRC=$SHARED/vnc_stack1; IMG=images; MSK=masks_mito; PRE=vnc_
        LAB="00 01 02 03 04"; UNL=$(seq -f %02g 5 14); TEST="15 16 17 18 19"
        GEN_ARGS=(--encoding onehot) ;;
  folders) GEN_ARGS=(--encoding onehot) ;;
  *) echo "unknown setting $SETTING: isbi, vnc, mito or folders" >&2; exit 2 ;;
esac
if [ "${TEST10:-0}" = 1 ]; then  # vnc, mito: twice the test slices, half the unlabelled ones
  case "$SETTING" in vnc|mito) UNL=$(seq -f %02g 5 9); TEST=$(seq -f %02g 10 19) ;;
    *) echo "TEST10=1 is for vnc and mito" >&2; exit 2 ;; esac
fi

mkdir -p "$R"/{real,test}/{images,masks} "$R/unlabeled"
if [ "$SETTING" = folders ]; then
  : "${LABELLED:?folders: set LABELLED=DIR}" "${RAW:?folders: set RAW=DIR}" "${TEST:?folders: set TEST=DIR}"
  for d in images masks; do cp -n "$LABELLED/$d/"* "$R/real/$d/"; cp -n "$TEST/$d/"* "$R/test/$d/"; done
  cp -n "$RAW/"* "$R/unlabeled/"
else
  for i in $LAB; do cp -n "$SRC/$IMG/$PRE$i.tif" "$R/real/images/"; cp -n "$SRC/$MSK/$PRE$i.tif" "$R/real/masks/"; done
  for i in $TEST; do cp -n "$SRC/$IMG/$PRE$i.tif" "$R/test/images/"; cp -n "$SRC/$MSK/$PRE$i.tif" "$R/test/masks/"; done
  for i in $UNL; do cp -n "$SRC/$IMG/$PRE$i.tif" "$R/unlabeled/"; done  # images only: no masks
fi
READ=(--read-as "$READ_AS")
DEV=()
if [ -n "${DEVICE:-}" ]; then DEV=(--device "$DEVICE"); fi  # e.g. cuda: every command uses it

# 1. the generator (a stopped run resumes from its last checkpoint)
case "$SETTING" in isbi) INIT=${INIT:-none} ;; *) INIT=${INIT:-demo-diffusion} ;; esac
case "$SETTING" in mito|folders) GUIDANCE=${GUIDANCE:-3} ;; *) GUIDANCE=${GUIDANCE:-1} ;; esac
WHERE=${GUIDANCE_WHERE:-labelled}
if [ "$FAMILY" = pix2pix ]; then
  GEN_ARGS+=(--netG unet_128 --ngf 32 --ndf 32 --precision fp32 --noise-nc "${NOISE_NC:-0}")
  if [ "${NOISE_SCALE:-1}" != 1 ]; then GEN_ARGS+=(--noise-scale "$NOISE_SCALE"); fi
  SAMPLE_ARGS=()
else
  if [ "$INIT" != none ]; then GEN_ARGS+=(--init-from "$INIT"); fi
  GEN_ARGS+=(--lr-schedule constant)
  SAMPLE_ARGS=(--steps "$GEN_STEPS" --guidance "$GUIDANCE" --guidance-where "$WHERE" --fusion "$FUSION")
fi
if [ "${OBJECT_SHARE:-0}" != 0 ]; then GEN_ARGS+=(--object-share "$OBJECT_SHARE"); fi
UNL_ARGS=()
if [ "$UNLABELED" = 1 ]; then UNL_ARGS=(--unlabeled "$R/unlabeled" --unlabeled-share 0.5); fi
DONE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$R/gen/latest.json" 2>/dev/null || echo 0)
if [ "$DONE" -lt "$DIFF_STEPS" ]; then
  if [ -e "$R/gen/latest.json" ]; then $NS train --resume "$R/gen" --steps "$DIFF_STEPS"
  else $NS train --family "$FAMILY" --data "$R/real" --val-fraction 0 --out "$R/gen" \
    --steps "$DIFF_STEPS" --tile 128 --batch-size 4 --flips --rot90 "${GEN_ARGS[@]}" "${UNL_ARGS[@]}" "${READ[@]}" "${DEV[@]}" \
    --checkpoint-every 250 --sample-every 500 --log-every 25 --seed 0; fi
fi

# 2. synthetic masks: variations of the labelled masks (cut into SIZE x SIZE pieces first, so
#    that 1024 x 1024 VNC slices give 512 x 512 samples: the segmenter trains on 128 px crops
#    anyway, and diffusion time grows with the area; pieces overlap where a side is not a
#    multiple of SIZE) and layouts calibrated on them
[ -e "$R/masks/.done" ] || {
  mkdir -p "$R/pieces"
  $PY - "$R/real/masks" "$R/pieces" "$SIZE" <<'PY'
import sys
from pathlib import Path

import tifffile

from napari_synthgen.io import list_images, read_array

src, dst, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
def starts(length: int) -> list[int]:
    """Piece starts that cover the whole side, overlapping as little as they must (1024 px:
    0 and 512; 1000 px: 0 and 488), so masks of any size give every labelled pixel a piece."""
    n = -(-length // size)
    return sorted({round(i * (length - size) / max(n - 1, 1)) for i in range(n)})


for f in list_images(src):  # TIFF or PNG, as every command reads them
    m = read_array(f)
    slices = [(f.stem, m)] if m.ndim == 2 else [(f"{f.stem}_z{z:03d}", s)  # a stack: its slices
                                                 for z, s in enumerate(m)]
    for stem, s in slices:
        if min(s.shape) < size:  # smaller than a piece: the whole mask
            tifffile.imwrite(dst / f"{stem}.tif", s)
            continue
        for y in starts(s.shape[0]):
            for x in starts(s.shape[1]):
                tifffile.imwrite(dst / f"{stem}_y{y}_x{x}.tif", s[y:y + size, x:x + size])
PY
  $NS masks --variations-of "$R/pieces" --n "$N_VAR" --seed 1 "${READ[@]}" --out "$R/masks"
  $NS masks --like "$R/real" --n "$N_LIKE" --size "$SIZE" "$SIZE" --seed 2 "${READ[@]}" --out "$R/masks/like"
  mv "$R"/masks/like/*.tif "$R/masks/" && rm -r "$R/masks/like"
  touch "$R/masks/.done"; }

# 3. synthesis, 4. the figures, 5. the study
[ -e "$R/syn/generate.jsonl" ] || $NS generate --model "$R/gen" --masks "$R/masks" --out "$R/syn" \
  --seed 0 "${SAMPLE_ARGS[@]}" "${DEV[@]}"
[ -e "$R/report/report.csv" ] || $NS report --samples "$R/syn" --reference "$R/real" "${READ[@]}" "${DEV[@]}" --out "$R/report"
[ "${EVALUATE:-1}" = 1 ] || { echo "done (no evaluate): $R/report"; exit 0; }
[ -e "$R/eval/evaluation_sizes.csv" ] || $NS evaluate --real "$R/real" --synthetic "$R/syn" \
  --test "$R/test" --real-sizes "$SIZES" --steps "$SEG_STEPS" --batch-size 8 --seeds "$SEEDS" \
  --loss "${LOSS:-weighted_ce}" "${READ[@]}" "${DEV[@]}" ${EVAL_ARGS:-} --out "$R/eval"
echo "done: $R/eval/evaluation.md"
