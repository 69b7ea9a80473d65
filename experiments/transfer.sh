#!/usr/bin/env bash
# Regenerates docs/transfer.md: the paper's Table 1 (§5, domain shift) on our ladder. Prompt tuning, model
# tuning and prompt design are trained (or built) on SQuAD's train subset with dev carved from it, each trained
# method's learning rate chosen on that dev set by F1 (seed 42), then scored zero-shot on SQuAD dev and on each
# out-of-domain set: exact match and F1 on the first N questions of each (the same N for every method).
# Usage: experiments/transfer.sh [OUTPUT]   (RUNGS="smollm2-135m qwen2.5-0.5b", N=500; data from $SOFTPROMPT_DATA)
#        experiments/transfer.sh park [OUTPUT]   (after stopping the grid: keep its unfinished prompt-tuning runs)
# Each finished run's record (its softprompt.json: recipe, dev F1, kept step, seconds, held-out scores; and a
# prompt's two PEFT files, KBs) is kept in docs/transfer/records/, which is committed, so the table grows across
# sessions and checkouts: a cell with a kept record is not run again. Within a checkout a run cut short resumes
# from its checkpoint. A chosen prompt this checkout lacks is scored from its kept files; a chosen model-tuned
# folder (GBs, not kept) is trained again, with the same recipe and seed, before it is scored; its new scores
# join the kept record. A prompt-tuning run longer than a session (0.5B: about two
# hours) goes on in the next one: `park`, after the grid is stopped, keeps each unfinished prompt-tuning run
# folder (its newest checkpoints, best prompt and log: under a megabyte) in docs/transfer/parked/, which is
# committed, and the next run resumes it from there, bit for bit as an unbroken run. A model-tuning run's
# checkpoint is the whole model (GBs): it is not parked, and must finish within one session.
set -euo pipefail
park=false
[[ ${1:-} == park ]] && { park=true; shift; }
out=$(realpath -m "${1:-runs/transfer}")  # absolute and normalised, as transfer_table.py prints paths
records=$(realpath -m "${RECORDS:-docs/transfer/records}")
parked=$(realpath -m "${PARKED:-docs/transfer/parked}")
saved() { compgen -G "$1/checkpoints/step-*" > /dev/null; }  # saved FOLDER: it holds a checkpoint
if $park; then
  shopt -s nullglob
  for run in "$out"/*/prompt-tuning/lr-*/checkpoints; do
    folder=${run%/checkpoints} cell=${run#"$out"/}; cell=${cell%/checkpoints}
    [[ -f $folder/softprompt.json ]] && continue  # finished: its record is kept
    saved "$folder" || continue  # stopped before its first checkpoint: nothing to keep
    rm -rf "$parked/$cell" && mkdir -p "$parked/$cell"
    cp -r "$folder"/. "$parked/$cell"/ && rm -f "$parked/$cell/.lock"
    echo "parked $cell (at $(basename "$(ls -d "$folder"/checkpoints/step-* | tail -1)"))"
  done
  "${PYTHON:-python}" "$(dirname "$0")/transfer_table.py" page "$records" "${N:-500}" "$parked" > docs/transfer.md.tmp
  mv docs/transfer.md.tmp docs/transfer.md
  exit 0
fi
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
py=${PYTHON:-python}
table=$(dirname "$0")/transfer_table.py
read -r -a rungs <<< "${RUNGS:-smollm2-135m qwen2.5-0.5b}"
n=${N:-500}
# 1,000 training questions (seeded sample of the 11,877), 5% of them (50) as dev; 150 steps of 8 (1.3 epochs);
# dev F1 from greedy decoding every 50 steps keeps the best prompt or model. Seed 42 (the default: README's
# squad run is the 135M prompt-tuning cell at lr 3e-2), float32 on every CPU, so cells from different sessions'
# machines are computed alike.
data=(--task squad --train-limit 1000 --dev-fraction 0.05 --dtype float32 --no-progress)
recipe=(--max-steps 150 --batch-size 8 --eval-every 50 --keep-best f1)
targets=("squad dev" "squadshifts/new_wiki test" "squadshifts/reddit test" "squadshifts/amazon test"
         "mrqa/relation_extraction test")

lrs() {  # lrs MODEL METHOD: the grid around each method's default (Qwen's input embeddings are ~8x smaller)
  case $2 in
    prompt-tuning) case $1 in qwen2.5-*) echo "3e-4 1e-3 3e-3" ;; *) echo "1e-2 3e-2 1e-1" ;; esac ;;
    model-tuning) echo "1e-5 3e-5 1e-4" ;;
  esac
}

make_run() {  # make_run FOLDER: train (or build) the cell OUT/MODEL/METHOD[/lr-LR] once, and keep its record
  local folder=$1 cell=${1#"$out"/} model method lr
  model=${cell%%/*}; method=${cell#*/}; method=${method%%/*}
  if [[ -f $folder/softprompt.json ]]; then
    :  # made already in this checkout (README's squad run is one cell): its record is kept below
  elif [[ -f $records/$cell/adapter_model.safetensors ]]; then  # a prompt trained in an earlier session
    mkdir -p "$folder" && cp "$records/$cell"/* "$folder"/
  elif [[ $method == prompt-design ]]; then
    "$sp" design "${data[@]}" --model "$model" --shots 2 --output "$folder" --overwrite
  elif saved "$folder"; then
    "$sp" train --resume "$folder"
  elif saved "$parked/$cell"; then  # begun in an earlier session
    mkdir -p "$folder" && cp -r "$parked/$cell"/. "$folder"/
    "$sp" train --resume "$folder"
  else
    lr=${cell##*/lr-}
    extra=(--num-virtual-tokens 20 --save-steps 10)  # checkpoints every 10 steps: what park keeps
    [[ $method == model-tuning ]] && extra=()
    "$sp" train "${data[@]}" "${recipe[@]}" --model "$model" --method "$method" --lr "$lr" ${extra[@]+"${extra[@]}"} \
      --output "$folder" --overwrite
  fi
  "$py" "$table" keep "$folder" "$records/$cell"
  rm -rf "${parked:?}/$cell"
}

for model in "${rungs[@]}"; do
  for method in prompt-tuning model-tuning; do
    for lr in $(lrs "$model" "$method"); do
      [[ -f $records/$model/$method/lr-$lr/softprompt.json ]] || make_run "$out/$model/$method/lr-$lr"
    done
  done
  [[ -f $records/$model/prompt-design/softprompt.json ]] || make_run "$out/$model/prompt-design"
  # The learning rate each trained method keeps: the best dev F1 over its grid (no test row read before).
  chosen=$("$py" "$table" choose "$records/$model")
  for target in "${targets[@]}"; do
    read -r task split <<< "$target"
    # shellcheck disable=SC2086  # chosen is a list of folders
    todo=$("$py" "$table" unscored "$task" "$split" "$n" $chosen)  # apart from the loop, so a failure stops the script
    for kept in $todo; do
      folder=$out/${kept#"$records"/}
      make_run "$folder"
      "$sp" eval "$folder" --task "$task" --split "$split" --limit "$n" --dtype float32 --record --no-progress \
        >> "$out/evals.jsonl"
      "$py" "$table" keep "$folder" "$kept"
    done
  done
done
"$py" "$table" page "$records" "$n" "$parked" > docs/transfer.md.tmp && mv docs/transfer.md.tmp docs/transfer.md
