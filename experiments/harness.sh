#!/usr/bin/env bash
# docs/evaluation.md's table: one prompt scored on the same rows by `softprompt eval` and by lm-evaluation-harness
# in each of its three ways (local-completions through `softprompt serve`, local-chat-completions through it, and
# its own hf model with the folder as a PEFT adapter), on the embedded SmolLM2-135M. A tweets prompt trained the
# demo's way (raw, and with --chat), prompt design for SQuAD (2 demonstrations, text to text).
# The template ends without whitespace: the harness moves a context's trailing whitespace into each choice.
# Usage: experiments/harness.sh [OUTPUT]   (data from $SOFTPROMPT_DATA, default ../shared/data)
set -euo pipefail
out=${1:-runs/harness}
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
py=${PYTHON:-python}
rows=${ROWS:-200}  # the first test tweets
questions=${QUESTIONS:-100}  # the first SQuAD dev questions (decoded: slower)
port=${PORT:-8765}
tweets=(--task raft/twitter_complaints --template "Tweet text : {Tweet text} Label :" --max-length 96)
train=(--dev-fraction 0.2 --lr 0.01 --max-steps 50 --batch-size 8 --keep-best loss --seed 42 --dtype float32
       --no-progress --overwrite)
mkdir -p "$out/prompts" "$out/tasks" "$out/lm_eval"
"$sp" train "${tweets[@]}" "${train[@]}" --output "$out/prompts/tweets"
"$sp" train "${tweets[@]}" "${train[@]}" --chat --output "$out/prompts/tweets-chat"
"$sp" design --task squad --shots 2 --seed 42 --dtype float32 --no-progress --overwrite --output "$out/prompts/squad"
score() {  # score NAME TASK SPLIT ROWS: softprompt eval's JSON line, and the harness task over the same rows
  local rows=(--task "$2" --split "$3" --limit "$4")
  "$sp" eval "$out/prompts/$1" "${rows[@]}" --dtype float32 --no-progress | tail -1 > "$out/$1.eval.json"
  "$sp" harness "$out/prompts/$1" "${rows[@]}" --output "$out/tasks" --name "${1//-/_}" > "$out/$1.lines"
}
score tweets raft/twitter_complaints test "$rows"
score tweets-chat raft/twitter_complaints test "$rows"
score squad squad dev "$questions"
harness() {  # harness OUT MODEL MODEL_ARGS TASK [OPTIONS]
  "$py" -m lm_eval --model "$2" --model_args "$3" --include_path "$out/tasks" --tasks "${4//-/_}" --batch_size 8 \
    --output_path "$out/lm_eval/$1" "${@:5}"
}
base=$("$py" -c 'from softprompt.models.base import resolve; print(resolve("smollm2-135m"))')
harness hf-tweets hf "pretrained=$base,peft=$(cd "$out/prompts/tweets" && pwd),dtype=float32" tweets --device cpu
"$sp" serve --prompts "$out/prompts" --dtype float32 --port "$port" > "$out/serve.log" 2>&1 &
server=$!
trap 'kill $server' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" > /dev/null; do sleep 1; done
url=http://127.0.0.1:$port/v1
for name in tweets tweets-chat squad; do
  harness "completions-$name" local-completions "model=$name,base_url=$url/completions,tokenizer=$base" "$name"
done
harness chat-squad local-chat-completions "model=squad,base_url=$url/chat/completions,tokenizer=$base" squad \
  --apply_chat_template
"$py" "$(dirname "$0")/harness_table.py" "$out"
