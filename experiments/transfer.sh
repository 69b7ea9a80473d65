#!/usr/bin/env bash
# Regenerates docs/transfer.md: the paper's Table 1 (§5, domain shift) on our ladder. Prompt tuning, model
# tuning and prompt design are trained (or built) on SQuAD's train subset with dev carved from it, each trained
# method's learning rate chosen on that dev set by F1 (seed 0), then scored zero-shot on SQuAD dev and on each
# out-of-domain set: exact match and F1 on the first N questions of each (the same N for every method).
# Usage: experiments/transfer.sh [OUTPUT]   (RUNGS="smollm2-135m qwen2.5-0.5b", N=500; data from $SOFTPROMPT_DATA)
# A rerun goes on where it stopped: a run with its softprompt.json is done, a run cut short resumes from its
# checkpoint, and a set already scored (in a folder's `eval --record` figures) is not scored again.
set -euo pipefail
out=${1:-runs/transfer}
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
py=${PYTHON:-python}
read -r -a rungs <<< "${RUNGS:-smollm2-135m qwen2.5-0.5b}"
n=${N:-500}
# 1,000 training questions (seeded sample of the 11,877), 5% of them (50) as dev; 150 steps of 8 (1.3 epochs);
# dev F1 from greedy decoding every 50 steps keeps the best prompt or model.
data=(--task squad --train-limit 1000 --dev-fraction 0.05 --seed 0 --no-progress)
recipe=(--max-steps 150 --batch-size 8 --eval-every 50 --keep-best f1)
targets=("squad dev" "squadshifts/new_wiki test" "squadshifts/reddit test" "squadshifts/amazon test"
         "mrqa/relation_extraction test")

lrs() {  # lrs MODEL METHOD: the grid around each method's default (Qwen's input embeddings are ~8x smaller)
  case $2 in
    prompt-tuning) case $1 in qwen2.5-*) echo "3e-4 1e-3 3e-3" ;; *) echo "1e-2 3e-2 1e-1" ;; esac ;;
    model-tuning) echo "1e-5 3e-5 1e-4" ;;
  esac
}

train() {  # train FOLDER OPTIONS...: once; a run cut short resumes
  local folder=$1; shift
  if [[ -f $folder/softprompt.json ]]; then return; fi
  if [[ -d $folder/checkpoints ]]; then "$sp" train --resume "$folder"; return; fi
  "$sp" train "${data[@]}" "${recipe[@]}" "$@" --output "$folder" --overwrite
}

for model in "${rungs[@]}"; do
  runs=$out/${model//\//_}
  for method in prompt-tuning model-tuning; do
    for lr in $(lrs "$model" "$method"); do
      extra=(--num-virtual-tokens 20)
      [[ $method == model-tuning ]] && extra=(--dtype float32)
      train "$runs/$method/lr-$lr" --model "$model" --method "$method" --lr "$lr" "${extra[@]}"
    done
  done
  if [[ ! -f $runs/prompt-design/softprompt.json ]]; then
    "$sp" design "${data[@]}" --model "$model" --shots 2 --output "$runs/prompt-design" --overwrite
  fi
  # The learning rate each trained method keeps: the best dev F1 over its grid (no test row read before).
  chosen=$("$py" "$(dirname "$0")/transfer_table.py" choose "$runs")
  for target in "${targets[@]}"; do
    read -r task split <<< "$target"
    # shellcheck disable=SC2086  # chosen is a list of folders
    todo=$("$py" "$(dirname "$0")/transfer_table.py" unscored "$task" "$split" "$n" $chosen)
    if [[ -n $todo ]]; then
      # shellcheck disable=SC2086
      "$sp" eval $todo --task "$task" --split "$split" --limit "$n" --record --no-progress >> "$runs/evals.jsonl"
    fi
  done
done
"$py" "$(dirname "$0")/transfer_table.py" page "$out" "$n" > docs/transfer.md
