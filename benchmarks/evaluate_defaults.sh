#!/usr/bin/env bash
# The evaluation of the shipped default models in docs/model_card.md, one part per call, so
# that parts can run side by side (each uses the threads given by THREADS, default 1).
#
#   bash benchmarks/evaluate_defaults.sh 2d-synthseg   # held-out SynthSeg maps, synthetic contrasts
#   bash benchmarks/evaluate_defaults.sh 2d-mni152     # the real MNI152 T1 (nilearn)
#   bash benchmarks/evaluate_defaults.sh 2d-colin27    # the real Colin27 T1 (apt-get install mricron-data)
#   bash benchmarks/evaluate_defaults.sh 3d-synthseg | 3d-mni152 | 3d-colin27
#
# LABELS points at the SynthSeg label maps (default ../shared/data/synthseg_label_maps beside
# the checkout); OUT is the output root (default runs/eval). Each part writes
# OUT/<part>/{scores.csv,table.md,scores.png,verdict.txt} and OUT/<part>.log.
# MODEL evaluates another model of the same family on the same episodes (a run's model.h5;
# default: default-2d or default-3d). FEWSHOT=0 leaves out the few-shot U-Net in 2D, FEWSHOT=1
# adds it in 3D; the other rows do not change, so a candidate's rows can be read beside an
# earlier run's few-shot rows: python benchmarks/goals.py runs/new/2d-synthseg+runs/eval/2d-synthseg
set -euo pipefail

part=${1:?usage: evaluate_defaults.sh 2d-synthseg|2d-mni152|2d-colin27|3d-synthseg|3d-mni152|3d-colin27}
here=$(cd "$(dirname "$0")/.." && pwd)
LABELS=${LABELS:-$here/../shared/data/synthseg_label_maps}
OUT=${OUT:-runs/eval}
THREADS=${THREADS:-1}
BIN=${BIN:-$here/.venv/bin}

# The default models' training split: --holdout 4 --seed 0 (docs/model_card.md), so the targets
# below are subjects neither model was trained on.
common=(--holdout 4 --seed 0 -j "$THREADS")
TASKS9=seg_hippocampus,seg_thalamus,seg_lateral_ventricles,seg_putamen,seg_caudate
TASKS9=$TASKS9,skull_stripping,denoising,bias_correction,inpainting
case "$part" in
  2d-*) model=(-m "${MODEL:-default-2d}") grid=(--shape 96 96 --context-sizes 1 2 4 8 16 --draws 2) ;;
  # 3D: the nine tasks the model card reports, L = 1, 2, 4, one draw, and no few-shot U-Net
  # unless FEWSHOT=1 (50 steps): its 64^3 training costs about 4 minutes per (task, L) group on
  # a shared core (3d-mni152, 15 groups: 62 minutes), about 2 hours for a 27-group part.
  3d-*) model=(-m "${MODEL:-default-3d}") grid=(--shape 64 64 64 --context-sizes 1 2 4 --draws 1
                                   --mini-context 2 --tasks "$TASKS9") ;;
  *) echo "unknown part: $part" >&2; exit 2 ;;
esac
case "$part" in
  *-synthseg) source=(--labels "$LABELS") ;;
  # The real scans: fewer L and one draw per L (the two-core budget of the model card's run).
  *-mni152) source=(--real mni152 --real-subjects 20) ;;
  *-colin27) source=(--real colin27 --real-subjects 20) ;;
  *) echo "unknown part: $part" >&2; exit 2 ;;
esac
case "$part" in
  2d-mni152|2d-colin27) grid=(--shape 96 96 --context-sizes 1 2 4 8 --draws 1) ;;
  # The MNI152-derived labels have no hippocampus, putamen or caudate, and its T1 no skull:
  # every task that can run on it (the default list less what it lacks, said in table.md).
  3d-mni152) grid=(--shape 64 64 64 --context-sizes 1 2 4 --draws 1 --mini-context 2) ;;
esac
case "$part" in
  3d-*) if [ "${FEWSHOT:-0}" = 1 ]; then grid+=(--fewshot-steps 50); else grid+=(--no-fewshot); fi ;;
  2d-*) if [ "${FEWSHOT:-1}" = 0 ]; then grid+=(--no-fewshot); fi ;;
esac

mkdir -p "$OUT"
set -x
"$BIN/neuroicl-evaluate" -o "$OUT/$part" "${model[@]}" "${source[@]}" "${grid[@]}" \
    "${common[@]}" 2>&1 | tee "$OUT/$part.log"
