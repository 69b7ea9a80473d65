#!/usr/bin/env bash
# Regenerates every figure in docs/experiments.md: about 70 minutes on 2 CPU cores.
# Usage: experiments/run.sh [OUTPUT]   (data from $SOFTPROMPT_DATA, default ../shared/data)
set -euo pipefail
out=${1:-runs/experiments}
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
# Every run: 50 AdamW steps of batch 8 (the seed recipe's optimiser), scored on the first 400 test rows.
common=(--max-steps 50 --test-split test --test-limit 400 --no-progress)

# Prompt ensembling (paper §6): five seeds of one configuration, then all five in one batched forward.
"$sp" sweep --task glue/sst2 --train-limit 200 --lengths 20 --inits class-label --seeds 1,2,3,4,5 \
  "${common[@]}" --output "$out/ensemble-sst2"
for mode in vote mean; do
  "$sp" ensemble "$out"/ensemble-sst2/runs/* --task glue/sst2 --split test --limit 400 --mode "$mode" \
    > "$out/ensemble-sst2/ensemble-$mode.json"
done

# Interpretability (paper §7): the tokens nearest to each vector of one trained class-label prompt.
"$sp" inspect "$out/ensemble-sst2/runs/len20-class-label-seed1" --k 5 > "$out/inspect-sst2.txt"

# Zero-shot domain transfer (paper §5): train on QQP, score on MRPC dev with its columns mapped.
"$sp" transfer --train "$SOFTPROMPT_DATA/qqp_sample/train_subset.tsv" --train-limit 2000 \
  --template "Question 1 : {question1} Question 2 : {question2} Same meaning ? " --label-field is_duplicate \
  --verbalizer "0=no,1=yes" --init class-label --num-virtual-tokens 20 --max-steps 150 --no-progress \
  --target "$SOFTPROMPT_DATA/mrpc/dev.tsv" --target-map "question1=#1 String,question2=#2 String,is_duplicate=Quality" \
  --output "$out/transfer-qqp-mrpc" --overwrite > "$out/transfer-qqp-mrpc.json"

for model in smollm2-135m gemma3-270m; do  # after the smollm2-only runs above
  lengths=1,5,20,100 inits=random-uniform,sampled-vocab,class-label
  [ "$model" = gemma3-270m ] && lengths=1,20,100 inits=class-label  # a coarser grid for the larger model
  "$sp" sweep --model "$model" --task glue/sst2 --train-limit 200 --lengths "$lengths" --inits "$inits" \
    "${common[@]}" --output "$out/sweep-$model-sst2"
  "$sp" sweep --model "$model" --task raft/twitter_complaints --lengths "$lengths" --inits "$inits" \
    "${common[@]}" --output "$out/sweep-$model-twitter"
done

"${PYTHON:-python}" "$(dirname "$0")/report.py" "$out"  # plots, CSVs and tables into docs/experiments/
