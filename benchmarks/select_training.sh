#!/usr/bin/env bash
# Validation-only choice of a training setting of the 2D-image preset (configs/images_2d.json): for each setting and
# seed, the training bundle trains a model on the 2D demo images with the setting's overrides (the preset's test-time
# latent refinement included, so training ends with a recalibration) and the evaluation bundle scores the validation
# split. Prints image AUROC and voxel AUPRC per setting, mean over the seeds; the test split is never read.
#
# Usage (repository root, installed environment):
#   bash benchmarks/select_training.sh OUT ["NAME:OVERRIDES" ...]
#   e.g. bash benchmarks/select_training.sh /tmp/selection "off:--augment_prob 0" "p1:--augment_prob 1.0"
# Without settings: the augmentation choice of benchmarks/README.md. THREADS=1 gives each run one thread.
set -euo pipefail
out=${1:?usage: select_training.sh OUT [NAME:OVERRIDES ...]}
shift
settings=("$@")
[ ${#settings[@]} -gt 0 ] || settings=(
  "off:--augment_prob 0"
  "p0.5:--augment_prob 0.5"
  "p1.0:--augment_prob 1.0"
  "p0.5_strong:--augment_prob 0.5 --augment_rotate 0.2 --augment_scale 0.1 --augment_translate 4"
  "off_latent128:--augment_prob 0 --latent_size 128"
)
seeds=${SEEDS:-"0 1 2"}
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
data=bundles/bigan/data/demo2d
python -m monai_bigan.data.demo_slices --source_dir bundles/bigan/data/demo --output_dir "$data"
train_cfg="['bundles/bigan/train.json','configs/images_2d.json']"
eval_cfg="['bundles/bigan/inference.json','bundles/bigan/evaluate.json','configs/images_2d.json']"
for setting in "${settings[@]}"; do
  name=${setting%%:*}
  overrides=${setting#*:}
  for seed in $seeds; do
    root="$out/$name/seed$seed"
    [ -f "$root/validation/metrics.json" ] && continue
    mkdir -p "$root"
    if [ ! -f "$root/models/model.pt" ]; then
      # shellcheck disable=SC2086
      python -m monai.bundle run training --config_file "$train_cfg" --bundle_root "$root" --dataset_dir "$data" \
        --seed "$seed" --resume false $overrides > "$root/train.log" 2>&1
    fi
    # shellcheck disable=SC2086
    python -m monai.bundle run --config_file "$eval_cfg" --bundle_root "$root" --dataset_dir "$data" \
      --split validation --output_dir "$root/validation" --baselines "[]" $overrides > "$root/evaluate.log" 2>&1
    echo "$name seed$seed done"
  done
done
python benchmarks/validation_summary.py "$out"
