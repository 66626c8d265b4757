#!/usr/bin/env bash
# The training ablation of docs/training.md (issue 12), SmolLM2-135M-Instruct at a small scale: each arm trains
# 48 samples x 1024 tokens of plays/novels/code/technical (train documents) for 40 joint steps of batch 2, then
# is measured on held-out documents (5 genres, the bible never trained on) and a short held-out task suite.
#   bash recipes/ablation.sh OUT                 # every arm (about 27 min each alone on 2 cores), then the table
#   bash recipes/ablation.sh OUT paper distill   # some arms
# Resumable: a finished step is skipped (its adapter or JSON exists), a training run resumes from its newest
# checkpoint and the suite from its journal; an arm whose two eval JSONs exist is skipped whole, so the measured
# arms kept in docs/benchmarks/ablation (eval JSONs, trainer_state.json, adapter_config.json; no weights) can be
# copied into OUT to finish the rest. The table: python recipes/ablation_table.py OUT > table.md
# Arms (all else equal, the paper's recipe is `paper`):
#   paper       L_lm under simulated pruning, local window 0.1, text windows and chats (task share 0.5)
#   distill     KL to the unpruned model's next-token distribution instead of L_lm (beyond the paper)
#   window30    protected local window 0.3 (its own marking: the window changes which tokens are ranked)
#   text-only   saliency targets from plain text only (task share 0)
#   chats-only  saliency targets from task chats only (task share 1; code has no chats)
#   followup    a quarter of the chats are two-turn (the question in a second user turn; --task-kinds ... followup)
set -euo pipefail
OUT=${1:?usage: ablation.sh OUT [ARM ...]}
shift
ARMS=("$@")
[ ${#ARMS[@]} -gt 0 ] || ARMS=(paper distill window30 text-only chats-only followup)
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=()  # the default model, SmolLM2-135M-Instruct
LABEL=smollm2-135m-instruct
source "$HERE/steps.sh"
COMMON=(--genres plays novels code technical --length 1024 --samples 48 --steps 40 --per-device-batch-size 2
        --save-every 10 --save-total-limit 1 --seed 1)
# evaluation: 1K prefixes (the training length), 8 windows per genre; the suite at 1K with 20 prompts per task
COMPARE=(--genres plays novels code technical bible --windows 8 --prefix 1024 --continuation 128
         --no-tasks --no-llmlingua --no-kvpress)
SUITE=(--tasks retrieval second_turn summarization --lengths 1024 --prompts 20 --methods sdtp recency)

arm_flags() {  # arm -> marking name, then the flags that differ from `paper`
  case $1 in
    paper) echo "mark-mix" ;;
    distill) echo "mark-mix --lm-loss-weight 0 --distill-loss-weight 1" ;;
    window30) echo "mark-w30 --local-window-ratio 0.3" ;;
    text-only) echo "mark-text --task-share 0" ;;
    chats-only) echo "mark-chats --task-share 1" ;;
    followup) echo "mark-fu --task-kinds passkey kv needle followup" ;;
    *) echo "unknown arm '$1'; allowed: paper distill window30 text-only chats-only followup" >&2; return 1 ;;
  esac
}

for arm in "${ARMS[@]}"; do
  spec=$(arm_flags "$arm")
  read -r -a words <<<"$spec"
  marking=${words[0]}
  flags=("${words[@]:1}")
  out="$OUT/$arm"
  if measured "$out/eval"; then
    echo "$arm: measured already (its eval JSONs exist), skipped"
    continue
  fi
  if [ ! -f "$out/adapter_config.json" ]; then  # not `[ ] || f`: set -e does not apply inside f there
    train_resumable "$out" "$OUT/$marking" "${COMMON[@]}" "${flags[@]}"
  fi
  measure "$out" "$out/eval"
  echo "$arm: done $(date +%T)"
done
$PY "$HERE/ablation_table.py" "$OUT" "${ARMS[@]}"
