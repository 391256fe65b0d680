#!/usr/bin/env bash
# Validation-only choice of the test-time latent refinement of the 2D-image preset: for each setting and seed, a copy
# of the ablation's default model (trained by `bash benchmarks/ablation.sh RUNS images`) is recalibrated with that
# scorer (the training bundle's `calibrating`: healthy residual statistics and thresholds refitted) and evaluated on
# the validation split of the 2D demo images. Prints image AUROC and voxel AUPRC per setting, mean over the seeds.
#
# Usage (repository root, installed environment):
#   bash benchmarks/select_refinement.sh RUNS OUT ["STEPS:LR" ...]
#   RUNS: the ablation folder holding images/default/seed*/models; OUT: a new folder for the copies and results.
set -euo pipefail
runs=${1:?usage: select_refinement.sh RUNS OUT [STEPS:LR ...]}
out=${2:?usage: select_refinement.sh RUNS OUT [STEPS:LR ...]}
shift 2
settings=("$@")
[ ${#settings[@]} -gt 0 ] || settings=("0:0.01" "20:0.05" "20:0.1" "20:0.2" "20:0.4" "20:0.8" "50:0.1")
seeds=${SEEDS:-"0 1 2"}
data=bundles/bigan/data/demo2d
python -m monai_bigan.data.demo_slices --source_dir bundles/bigan/data/demo --output_dir "$data"
train_cfg="['bundles/bigan/train.json','configs/images_2d.json']"
eval_cfg="['bundles/bigan/inference.json','bundles/bigan/evaluate.json','configs/images_2d.json']"
for setting in "${settings[@]}"; do
  steps=${setting%%:*}
  lr=${setting#*:}
  for seed in $seeds; do
    root="$out/steps${steps}_lr${lr}/seed$seed"
    [ -f "$root/validation/metrics.json" ] && continue
    mkdir -p "$root/models"
    cp "$runs/images/default/seed$seed/models/model.pt" "$runs/images/default/seed$seed/models/calibration.json" \
      "$root/models/"
    python -m monai.bundle run calibrating --config_file "$train_cfg" --bundle_root "$root" --dataset_dir "$data" \
      --seed "$seed" --refine_steps "$steps" --refine_lr "$lr" > "$root/calibrate.log" 2>&1
    python -m monai.bundle run --config_file "$eval_cfg" --bundle_root "$root" --dataset_dir "$data" \
      --split validation --output_dir "$root/validation" --baselines "[]" --refine_steps "$steps" \
      --refine_lr "$lr" > "$root/evaluate.log" 2>&1
    echo "steps $steps lr $lr seed$seed done"
  done
done
python benchmarks/validation_summary.py "$out"
