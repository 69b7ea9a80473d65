#!/usr/bin/env bash
# docs/scale.md's chat study: the demo's recipe (configs/demo.toml, qwen2.5-0.5b) trained once on raw text and
# once with `--chat` (each tweet a user message through Qwen's chat template, the label the assistant's reply),
# with prompt design built both ways from the same 4 examples, all four scored on the demo's 1,000 held-out
# tweets. Qwen's template adds 29 tokens around the message (its default system turn among them), so the chat
# runs get --max-length 96 for the same room for the tweet as the raw runs' 64.
# Usage: experiments/chat.sh [OUTPUT]   (data from $SOFTPROMPT_DATA, default ../shared/data)
set -euo pipefail
out=${1:-runs/chat}
export SOFTPROMPT_DATA=${SOFTPROMPT_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sp=${SOFTPROMPT:-softprompt}
common=(--config configs/demo.toml --no-progress --overwrite)
chat=(--chat --max-length 96)
"$sp" train "${common[@]}" --output "$out/raw"
"$sp" train "${common[@]}" "${chat[@]}" --output "$out/chat"
"$sp" design "${common[@]}" --output "$out/raw-design"
"$sp" design "${common[@]}" "${chat[@]}" --output "$out/chat-design"
"$sp" eval "$out/raw" "$out/chat" "$out/raw-design" "$out/chat-design" --task raft/twitter_complaints --split test \
  --limit 1000 --no-progress
