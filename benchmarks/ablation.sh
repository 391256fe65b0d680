#!/usr/bin/env bash
# Ablation of the detection-quality options on the demo data: each option switched against the default recipe,
# 3 seeds each, every variant trained with the training bundle and evaluated with the evaluation bundle; the default
# variant (and the polarity variant, which switches the z-score baseline's polarity too) is evaluated beside the
# z-score and PCA baselines. Options that act at test time only reuse the default variant's weights: a copy of its
# model is recalibrated with the variant's scorer (the training bundle's `calibrating`: healthy residual statistics and
# thresholds refitted) before it is evaluated. Prints the table of benchmarks/README.md at the end
# (benchmarks/ablation_table.py).
#
# Usage (repository root, installed environment):
#   bash benchmarks/ablation.sh [RUNS_DIR] [volumes|images] [VARIANT ...]
#   volumes: the 3D demo volumes scored slice by slice (bundle defaults); images: the 2D demo images
#   (configs/images_2d.json on axial slices cut from the demo volumes by monai_bigan.data.demo_slices).
# Re-running skips the runs that already have their metrics.json.
set -euo pipefail
runs=${1:-/tmp/bigan_ablation}
mode=${2:-volumes}
shift 2 || shift $# || true
seeds=${SEEDS:-"0 1 2"}
demo=bundles/bigan/data/demo
python -c "import monai_bigan.data as d; d.ensure_demo_data('$demo')"
train_cfg=bundles/bigan/train.json
eval_cfg="['bundles/bigan/inference.json','bundles/bigan/evaluate.json']"
data=$demo
if [ "$mode" = images ]; then
  data=bundles/bigan/data/demo2d
  python -m monai_bigan.data.demo_slices --source_dir "$demo" --output_dir "$data"
  train_cfg="['bundles/bigan/train.json','configs/images_2d.json']"
  eval_cfg="['bundles/bigan/inference.json','bundles/bigan/evaluate.json','configs/images_2d.json']"
fi

# the 2D-image preset refines the codes by default (configs/images_2d.json): there the variant switches it off
refinement_row="latent_refinement||--refine_steps 20 --refine_lr 0.4|default"
augmentation_row="augmentation|--augment_prob 1.0||"
if [ "$mode" = images ]; then  # the 2D-image preset refines and augments by default
  refinement_row="no_latent_refinement||--refine_steps 0|default"
  augmentation_row="no_augmentation|--augment_prob 0||"
fi
# name | training overrides | test-time overrides | variant whose models are reused (empty: train)
variants_table=(
  "default|||"
  "no_normalization||--heatmap_normalize false|default"
  "no_smoothing||--heatmap_sigma 0|default"
  "no_brain_mask||--heatmap_mask false|default"
  "$refinement_row"
  "feature_matching_score||--discriminator_term feature_matching|default"
  "negative_polarity||--heatmap_polarity negative|default"
  "$augmentation_row"
  "no_recon_term|--recon_weight 0||"
  "no_ema|--ema_decay 0||"
  "spectral_norm|--spectral_norm true||"
  "alad_dxx|--alad_dxx true||"
  "alad_dxx_fm_xx_score|--alad_dxx true|--discriminator_term feature_matching_xx|alad_dxx"
  "alad_dxx_dzz|--alad_dxx true --alad_dzz true||"
)
# two streams can share the cores: THREADS=1 bash benchmarks/ablation.sh ... for each
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
selected=("$@")
for row in "${variants_table[@]}"; do
  IFS='|' read -r name train_args test_args reuse <<< "$row"
  if [ ${#selected[@]} -gt 0 ] && [[ ! " ${selected[*]} " =~ " $name " ]]; then continue; fi
  for seed in $seeds; do
    root="$runs/$mode/$name/seed$seed"
    out="$root/evaluation"
    [ -f "$out/metrics.json" ] && continue
    mkdir -p "$root"
    if [ -n "$reuse" ]; then
      if [ ! -f "$root/models/model.pt" ]; then
        mkdir -p "$root/models"
        cp "$runs/$mode/$reuse/seed$seed/models/model.pt" "$runs/$mode/$reuse/seed$seed/models/calibration.json" \
          "$root/models/"
        # shellcheck disable=SC2086
        python -m monai.bundle run calibrating --config_file "$train_cfg" --bundle_root "$root" --dataset_dir "$data" \
          --seed "$seed" $train_args $test_args > "$root/calibrate.log" 2>&1 \
          || { rm -f "$root/models/model.pt"; echo "$mode $name seed$seed: calibration failed, see $root/calibrate.log"; continue; }
      fi
    elif [ ! -f "$root/models/model.pt" ]; then  # model.pt is written when training completes
      # shellcheck disable=SC2086
      python -m monai.bundle run training --config_file "$train_cfg" --bundle_root "$root" --dataset_dir "$data" \
        --seed "$seed" --resume false $train_args > "$root/train.log" 2>&1
    fi
    baselines="[]"
    # the baselines beside the default, and beside the polarity variant, which changes the z-score baseline too
    [[ "$name" = default || "$name" = negative_polarity ]] && baselines="['zscore','pca']"
    # shellcheck disable=SC2086
    python -m monai.bundle run --config_file "$eval_cfg" --bundle_root "$root" --dataset_dir "$data" \
      --output_dir "$out" --baselines "$baselines" $train_args $test_args > "$root/evaluate.log" 2>&1 \
      || { echo "$mode $name seed$seed: evaluation failed, see $root/evaluate.log"; continue; }
    echo "$mode $name seed$seed done"
  done
done
python benchmarks/ablation_table.py "$runs/$mode"
