#!/usr/bin/env bash
# How far more *real* labelled slices take the study's segmenter: its learning curve on real
# pairs alone, up to every labelled slice that is not a test slice (issue 17, docs/utility.md,
# "How much room the targets have"). The same test slices, budget, batch and seeds as the
# study (scripts/utility_study.sh); only the real-only arm runs (`evaluate --arms real`).
#
#   bash scripts/utility_ceiling.sh vnc  RUN_DIR SYN_DIR   # sizes 2,5,15 of slices 00-14
#   bash scripts/utility_ceiling.sh isbi RUN_DIR SYN_DIR   # sizes 2,25 of slices 00-24
#
# SYN_DIR is a study's synthetic folder (runs/vnc1500/syn, runs/isbi/syn): evaluate takes its
# class weights from the real and synthetic masks together, as in the study. Knobs: SEG_STEPS
# (1500 for vnc, 1000 for isbi: the study's), SEEDS (3 for vnc, 2 for isbi), SIZES, EVAL_ARGS
# (more evaluate flags, e.g. "--base 32" for a larger segmenter: another --out). About 45
# minutes (vnc) and 15 (isbi) on 2 CPU cores; a stopped run resumes (evaluate keeps every
# finished run in --out).
set -euo pipefail
SETTING=${1:?usage: $0 vnc|isbi RUN_DIR SYN_DIR}
R=${2:?usage: $0 vnc|isbi RUN_DIR SYN_DIR}
SYN=${3:?usage: $0 vnc|isbi RUN_DIR SYN_DIR}
SHARED=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
NS=${NS:-napari-synthgen}
case "$SETTING" in
  vnc)  SRC=$SHARED/vnc_stack1; PRE=vnc_; LAB=$(seq -f %02g 0 14); TEST="15 16 17 18 19"
        SEG_STEPS=${SEG_STEPS:-1500}; SIZES=${SIZES:-2,5,15}; SEEDS=${SEEDS:-3} ;;
  isbi) SRC=$SHARED/isbi2012; PRE=isbi2012_train_; LAB=$(seq -f %02g 0 24); TEST="25 26 27 28 29"
        SEG_STEPS=${SEG_STEPS:-1000}; SIZES=${SIZES:-2,25}; SEEDS=${SEEDS:-2} ;;
  *) echo "unknown setting $SETTING: vnc or isbi" >&2; exit 2 ;;
esac
mkdir -p "$R"/{real,test}/{images,masks}
for i in $LAB; do cp -n "$SRC/images/$PRE$i.tif" "$R/real/images/"; cp -n "$SRC/masks/$PRE$i.tif" "$R/real/masks/"; done
for i in $TEST; do cp -n "$SRC/images/$PRE$i.tif" "$R/test/images/"; cp -n "$SRC/masks/$PRE$i.tif" "$R/test/masks/"; done
$NS evaluate --real "$R/real" --synthetic "$SYN" --test "$R/test" --arms real \
  --real-sizes "$SIZES" --steps "$SEG_STEPS" --batch-size 8 --seeds "$SEEDS" ${EVAL_ARGS:-} --out "$R/eval"
echo "done: $R/eval/evaluation_sizes.csv"
