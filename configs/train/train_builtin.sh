#!/usr/bin/env bash
# Trains the pack's built-in model from nothing: generated data, VAE, stage 1, stage 2, export.
# This is the exact sequence that made models/champ/builtin/ (see docs/training.md, "The built-in
# model"). Run from the pack's root with its virtual environment active:
#   bash configs/train/train_builtin.sh [WORK_DIR]        (default WORK_DIR: out)
# CPU: uses torch's default threads. CUDA: the same configs, see docs/training.md.
# Every stage's wall time goes into WORK_DIR/small/timings.json, which the export copies into
# the model card. A rerun resumes: stages already timed there are skipped.
set -euo pipefail
work=${1:-out}
small="$work/small"
mkdir -p "$small"
timings="$small/timings.json"
[ -f "$timings" ] || echo "{}" > "$timings"

timed() {  # timed NAME COMMAND...: run, then record NAME's wall seconds in timings.json
  local name=$1; shift
  if python -c "import json, sys; sys.exit(0 if sys.argv[2] in json.load(open(sys.argv[1])) else 1)" "$timings" "$name"; then
    echo "$name: already done ($timings has its time); delete that entry to run it again"
    return
  fi
  local start; start=$(date +%s.%N)
  "$@"
  python - "$timings" "$name" "$start" <<'EOF'
import json, sys, time
path, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = json.load(open(path))
data[name] = round(time.time() - start, 1)
json.dump(data, open(path, "w"), indent=1)
EOF
}

timed synth_data python -m champ_core synth-data "$work/synth" --videos 160 --frames 48 --size 128 --seed 0
timed vae python -m champ_core train vae --config configs/train/small_vae.yaml \
  --set video_folder="$work/synth" --set output_dir="$small"
# The Champ networks learn from more people with fewer frames each: stage 1 samples single frames, so
# appearances (not frames per person) are what lets it copy a reference it never saw.
timed synth_people python -m champ_core synth-data "$work/people" --videos 480 --frames 24 --size 128 --seed 1
timed stage1 python -m champ_core train stage1 --config configs/train/small_stage1.yaml \
  --set data.video_folder="$work/people" --set output_dir="$small/stage1" --set vae_model_path="$small/vae"
timed stage2 python -m champ_core train stage2 --config configs/train/small_stage2.yaml \
  --set data.video_folder="$work/people" --set output_dir="$small/stage2" --set vae_model_path="$small/vae" \
  --set stage1_ckpt_dir="$small/stage1"
python -m champ_core train export-builtin --work "$small" --out models/champ/builtin
