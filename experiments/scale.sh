#!/usr/bin/env bash
# Regenerates docs/scale.md's figures: the paper's Figure 1 (model tuning, prompt tuning and prompt design
# against model size) on three tasks, with `softprompt compare`. Needs `make models` (the Qwen rungs).
# Usage: experiments/scale.sh [OUTPUT]   (data from $SOFTPROMPT_DATA, default ../shared/data)
# A rerun goes on where it stopped (compare skips the runs in its CSV), so the grid can be run in pieces.
set -euo pipefail
out=${1:-runs/scale}
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
ladder=smollm2-135m,gemma3-270m,qwen2.5-0.5b,qwen2.5-1.5b
trainable=smollm2-135m,gemma3-270m,qwen2.5-0.5b  # model tuning: 1.5B's float32 weights, gradients and AdamW state do not fit 24 GB
# Prompt tuning takes the demo's recipe (chosen on dev on SmolLM2: experiments/demo_recipe.py); prompt design
# 4 examples; model tuning the same steps at its own default lr. Prompt tuning and design 3 seeds, model tuning 1.
common=(--config configs/demo.toml --shots 4 --no-progress)

grid() {  # grid TASK_OUTPUT [compare options...]: the three methods on the ladder
  local folder=$1; shift
  "$sp" compare "${common[@]}" "$@" --models "$ladder" --methods prompt-tuning,prompt-design --seeds 0,1,2 \
    --output "$out/$folder"
  "$sp" compare "${common[@]}" "$@" --models "$trainable" --methods model-tuning --seeds 0 --output "$out/$folder"
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
