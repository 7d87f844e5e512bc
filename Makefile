# declab: the two commands a user needs are `make experiment NAME=grid1` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
NAME ?= grid1
DECLAB_MODELS ?= models
export DECLAB_MODELS := $(abspath $(DECLAB_MODELS))
BIN := target/release/declab

.PHONY: all models build native experiment test lint fmt help bench bench-check bench-baseline bench-peer bench-criterion bench-fixture logit-reference

help:
	@echo "make experiment NAME=grid1   fetch the model if needed, build, run experiments/\$$NAME.yaml (FLAGS=--fresh to start over)"
	@echo "make test                    the whole test suite (real model included)"
	@echo "make models                  fetch and verify the models into \$$DECLAB_MODELS (default models/)"
	@echo "make native                  a binary for this CPU only (target/native/release/declab; the default one runs on any x86-64)"
	@echo "make lint                    cargo fmt --check and clippy -D warnings"
	@echo "make bench / bench-check     sampler latency table / regression gate against bench/baseline.json (baseline-avx2.json on AVX2-only hosts)"
	@echo "make bench-criterion         criterion benches of every strategy at vocab 32k/128k/262k (stored real logits)"
	@echo "make bench-fixture           regenerate those stored logits from the real model"
	@echo "make bench-peer              declab vs llama.cpp on the same model (builds llama.cpp, ~5 min)"
	@echo "make logit-reference         regenerate llama.cpp's logit fixtures for the reference check (~15 min; needs g++)"

models:
	@scripts/fetch-models.sh

build:
	$(CARGO) build --release

# A binary for this CPU only (target-cpu=native) in target/native/release/declab. The default
# build runs on every x86-64 CPU and picks its kernels at run time; this one may SIGILL elsewhere.
native:
	CARGO_TARGET_DIR=target/native RUSTFLAGS="-C target-cpu=native" $(CARGO) build --release

experiment: models build
	@test -f experiments/$(NAME).yaml || { echo "no experiments/$(NAME).yaml; available: $$(ls experiments | sed 's/\.yaml//' | tr '\n' ' ')"; exit 2; }
	$(BIN) run experiments/$(NAME).yaml $(FLAGS)

# The real-model tests read the models fetched by `make models` (DECLAB_MODELS).
test: models
	$(CARGO) build --release
	$(CARGO) test --release -- --test-threads=1

# Sampler latency per strategy (vocab 32k/128k/262k, real Gemma logits) and the forward/sampler
# split in a short real run; writes results/bench/bench.{json,csv}.
bench: models build
	$(BIN) bench --out results/bench

# Latency regression gate: floor-normalised ratios at vocab 262k and each strategy's share of the
# per-token time inside a batch (real Gemma, one batch of every strategy) vs the committed baseline.
bench-check: models build
	$(BIN) bench --vocab 262144 --tokens 0 --iters 60 --batch-tokens 16 --check bench/baseline.json

# criterion benches of every strategy at vocab 32k/128k/262k on the committed real-logit fixture
# (benches/fixtures/); ARGS filters, e.g. `make bench-criterion ARGS=typical`.
bench-criterion:
	$(CARGO) bench --bench samplers -- $(ARGS)

# Regenerate the fixture: three real Gemma 3 270M logit rows spread over their entropy range.
bench-fixture: models build
	$(BIN) bench --save-logits benches/fixtures/gemma3-270m-logits.f16

# declab vs llama.cpp (built from the llama-cpp-python sdist in /tmp/declab-peer), as ratios.
# Not part of CI; the output goes in the README's performance section.
bench-peer: models build
	bash scripts/bench-peer.sh

# Regenerate tests/fixtures/reference/*.json.gz: llama.cpp's logits on the same GGUF files, which
# tests/reference_logits.rs checks declab against. Not part of CI; commit the fixtures.
logit-reference: models
	bash scripts/logit-reference.sh

# Re-measure the baseline (after an intended change; commit the file with the change).
bench-baseline: models build
	$(BIN) bench --vocab 262144 --tokens 0 --iters 60 --batch-tokens 16 --write-baseline bench/baseline.json --tolerance $(or $(TOLERANCE),2.5)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt
