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
# Prompt design: the same 4 examples, untrained. Prompt tuning and design 3 seeds (1 at 1.5B); model tuning 1, at its lr.
common=(--config configs/demo.toml --no-progress)
rung() {  # rung MODEL: the prompt-tuning options chosen for it
  case $1 in
    smollm2-135m) echo "--lr 0.01 --max-steps 50 --dtype auto" ;;
    gemma3-270m) echo "--lr 0.07 --max-steps 50 --dtype auto" ;;  # SmolLM2's lr x the embeddings' scale; not dev-checked
    qwen2.5-*) echo "--lr 0.001 --max-steps 30" ;;  # configs/demo.toml's (float32)
  esac
}

task_options() {  # task_options TASK: the task, its few-shot training set and its held-out rows
  case $1 in
    # RAFT twitter_complaints: 40 training tweets and 10 for dev (the demo's split), the first 1,000 held-out.
    twitter) echo "--task raft/twitter_complaints --test-limit 1000" ;;
    # SST-2 few-shot: 64 stratified training sentences, 16 of them carved out as dev; the first 300 test ones.
    sst2) echo "--task glue/sst2 --train-limit 64 --dev-fraction 0.25 --test-limit 300" ;;
    # SuperGLUE RTE few-shot: FewGLUE's 32 training and 32 dev pairs; all 277 validation pairs as the test set.
    rte) echo "--task superglue/rte --eval $SOFTPROMPT_DATA/superglue/RTE/fewglue32_dev32.jsonl --max-length 160" ;;
  esac
}
tasks=(twitter sst2 rte)

run() {  # run TASK [compare options...]: one compare call into the task's CSV
  local task=$1; shift
  # shellcheck disable=SC2046  # task_options gives words
  "$sp" compare "${common[@]}" $(task_options "$task") "$@" --output "$out/$task"
}

# In order of cost, so that a cut-short grid has its cheapest cells: prompt tuning and design on the three rungs
# below 1.5B (3 seeds), then model tuning (1 seed), then the 1.5B rung (seed 0 only: the cut that keeps it to
# about 1.5 hours; the whole grid takes about 6 hours on 2 cores, docs/scale.md's budget).
for task in "${tasks[@]}"; do
  for model in "${ladder[@]:0:3}"; do
    # shellcheck disable=SC2046
    run "$task" $(rung "$model") --models "$model" --methods prompt-tuning,prompt-design --seeds 0,1,2
  done
done
for task in "${tasks[@]}"; do
  run "$task" --lr 3e-5 --dtype auto --models "$trainable" --methods model-tuning --seeds 0
done
for task in "${tasks[@]}"; do
  # shellcheck disable=SC2046
  run "$task" $(rung qwen2.5-1.5b) --models qwen2.5-1.5b --methods prompt-tuning,prompt-design --seeds 0
done

for task in "${tasks[@]}"; do  # the CSVs and plots into docs/scale/
  mkdir -p docs/scale && cp "$out/$task/compare.csv" "docs/scale/$task.csv" && cp "$out/$task/compare.png" "docs/scale/$task.png"
done
