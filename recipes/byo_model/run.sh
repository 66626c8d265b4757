#!/usr/bin/env bash
# The worked example of docs/training.md: an adapter for a model sdtp_adapter does not package.
#   bash recipes/byo_model/run.sh OUT          # a 12-layer Qwen2, 64 chats of ~1.5K tokens (about 10 min on 2 cores)
#   bash recipes/byo_model/run.sh OUT --tiny   # a 4-layer one, 16 short chats (the test suite runs this)
set -euo pipefail
OUT=${1:?usage: run.sh OUT [--tiny]}
TINY=${2:-}
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)

# 1. the inputs: a Qwen2 checkpoint in a local folder (stand-in for yours) and a jsonl chat dataset
$PY "$HERE/make_example.py" "$OUT" $TINY

# 2. train: marking, warm start, joint steps; the target mask covers the assistant turns
if [ "$TINY" = "--tiny" ]; then
  SIZE=(--prune-layers 1 2 3 --max-length 512 --steps 6 --save-every 3 --warm-start-epochs 2)
  BENCH=(--windows 2 --prefix 256 --continuation 32 --lengths 512 --depths 0.5 --tasks passkey)
else
  SIZE=(--num-stages 6 --first-layer 3 --layer-step 1 --max-length 2048 --steps 60 --save-every 20)
  BENCH=(--windows 6 --prefix 1024 --continuation 64 --lengths 1024 --depths 0.2 0.8 --tasks passkey kv)
fi
$PY -m sdtp_adapter.cli train --model "$OUT/model" --dataset "$OUT/chats.jsonl" --output-dir "$OUT/adapter" "${SIZE[@]}"

# 3. compare it with the baselines on your own text (results under $OUT/bench, not in the package)
$PY -m sdtp_adapter.cli bench compare --model "$OUT/model" --adapter "$OUT/adapter" --text-file "$OUT/document.txt" \
  --no-llmlingua --no-kvpress --out "$OUT/bench" "${BENCH[@]}"

# 4. load it back like a PEFT adapter and prune a prompt
$PY - "$OUT" <<'PYTHON'
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from sdtp_adapter import SDTPModel

out = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(f"{out}/model")
tokenizer = AutoTokenizer.from_pretrained(f"{out}/model")
sdtp = SDTPModel.from_pretrained(model, f"{out}/adapter")
ids = tokenizer(open(f"{out}/document.txt").read()[:2000], return_tensors="pt").input_ids
result = sdtp(ids)
print("kept tokens per layer:", sdtp.last_pruning.kept_counts(model.config.num_hidden_layers))
PYTHON
