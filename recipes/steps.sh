# Resumable training and measurement steps shared by recipes/ablation.sh and recipes/gemma_mix.sh (sourced).
# The caller sets PY (the Python to run), HERE (the recipes folder), MODEL (the `--model NAME` flags, or
# empty for the default model), LABEL (the model name in the results' file names), COMPARE and SUITE (the
# `sdtp bench compare` / `sdtp bench suite` flags).

# train_resumable OUT MARKING TRAIN_FLAGS...: the marking into MARKING unless it is there, then the warm
# start and joint steps into OUT, resumed from OUT's newest checkpoint when one exists.
train_resumable() {
  local out=$1 marking=$2
  shift 2
  if [ ! -f "$marking/shard-0-of-1.safetensors" ]; then
    $PY "$HERE/train.py" "${MODEL[@]}" --output-dir "$marking-run" "$@" --phases mark \
      --marking-dir "$marking" --overwrite-output-dir
  fi
  local resume=()
  ls -d "$out"/checkpoint-* >/dev/null 2>&1 && resume=(--resume-from-checkpoint latest)
  $PY "$HERE/train.py" "${MODEL[@]}" --output-dir "$out" "$@" --phases warm,joint \
    --marking-dir "$marking" --no-overwrite-output-dir "${resume[@]}"
}

# measured EVAL: whether both results of `measure` are in EVAL.
measured() {
  [ -f "$1/compare-$LABEL.json" ] && [ -f "$1/suite-$LABEL.json" ]
}

# measure ADAPTER EVAL [SUITE_FLAGS...]: `sdtp bench compare` and `sdtp bench suite` of ADAPTER into EVAL,
# each skipped when its JSON is there (the suite also resumes from its journal).
measure() {
  local adapter=$1 eval=$2
  shift 2
  [ -f "$eval/compare-$LABEL.json" ] || \
    $PY -m sdtp_adapter.cli bench compare "${MODEL[@]}" --adapter "$adapter" "${COMPARE[@]}" --out "$eval"
  [ -f "$eval/suite-$LABEL.json" ] || \
    $PY -m sdtp_adapter.cli bench suite "${MODEL[@]}" --adapter "$adapter" "${SUITE[@]}" "$@" --out "$eval"
}
