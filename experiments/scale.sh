#!/usr/bin/env bash
# Regenerates docs/scale.md's figures: the paper's Figure 1 (model tuning, prompt tuning and prompt design
# against model size) on three tasks, with `softprompt compare`. Needs `make models` (the Qwen rungs).
# Usage: experiments/scale.sh [OUTPUT]   (data from $SOFTPROMPT_DATA, default ../shared/data)
# A rerun goes on where it stopped (compare skips the runs in its CSV), so the grid can be run in pieces; each
# rung is its own compare call into the task's one CSV, since the learning rate is chosen per rung.
set -euo pipefail
out=${1:-runs/scale}
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
ladder=(smollm2-135m gemma3-270m qwen2.5-0.5b qwen2.5-1.5b)
trainable=smollm2-135m,gemma3-270m,qwen2.5-0.5b  # model tuning: 1.5B's float32 weights, gradients and AdamW state do not fit 24 GB
# Prompt tuning: the demo's recipe (configs/demo.toml: the prompt starts as 4 training examples, AdamW, dev-loss
# keep-best), with the learning rate and steps chosen on dev per rung (experiments/demo_recipe.py; docs/scale.md):
# the lr follows the scale of the model's input embeddings (RMS 0.136 SmolLM2, 1.03 Gemma as scaled, 0.017 Qwen).
# The Qwen rungs run in float32 (the demo's dtype; at 1.5B it trains faster than bfloat16 on a CPU without AMX,
# docs/benchmarks.md), the smaller ones in the dtype `auto` picks.
# Prompt design: the same 4 examples, untrained. Prompt tuning and design 3 seeds; model tuning 1, at its lr.
common=(--config configs/demo.toml --no-progress)
rung() {  # rung MODEL: the prompt-tuning options chosen for it
  case $1 in
    smollm2-135m) echo "--lr 0.01 --max-steps 50 --dtype auto" ;;
    gemma3-270m) echo "--lr 0.07 --max-steps 50 --dtype auto" ;;  # SmolLM2's lr x the embeddings' scale; not dev-checked
    qwen2.5-*) echo "--lr 0.001 --max-steps 30" ;;  # configs/demo.toml's (float32)
  esac
}

grid() {  # grid TASK_OUTPUT [compare options...]: the three methods on the ladder
  local folder=$1; shift
  for model in "${ladder[@]}"; do
    # shellcheck disable=SC2046  # rung's options are words
    "$sp" compare "${common[@]}" "$@" $(rung "$model") --models "$model" --methods prompt-tuning,prompt-design \
      --seeds 0,1,2 --output "$out/$folder"
  done
  "$sp" compare "${common[@]}" "$@" --lr 3e-5 --dtype auto --models "$trainable" --methods model-tuning --seeds 0 \
    --output "$out/$folder"
}

# RAFT twitter_complaints: 40 training tweets and 10 for dev (the demo's split), the first 1,000 held-out tweets.
grid twitter --task raft/twitter_complaints --test-limit 1000
# SST-2 few-shot: 64 stratified training sentences, 16 of them carved out as dev; the first 300 test sentences.
grid sst2 --task glue/sst2 --train-limit 64 --dev-fraction 0.25 --test-limit 300
# SuperGLUE RTE few-shot: FewGLUE's 32 training and 32 dev pairs; all 277 validation pairs as the test set.
grid rte --task superglue/rte --eval "$SOFTPROMPT_DATA/superglue/RTE/fewglue32_dev32.jsonl" --max-length 160

for task in twitter sst2 rte; do  # the CSVs and plots into docs/scale/
  mkdir -p docs/scale && cp "$out/$task/compare.csv" "docs/scale/$task.csv" && cp "$out/$task/compare.png" "docs/scale/$task.png"
done
