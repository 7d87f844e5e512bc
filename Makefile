# declab: the two commands a user needs are `make experiment NAME=grid1` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
NAME ?= grid1
DECLAB_MODELS ?= models
export DECLAB_MODELS
BIN := target/release/declab

.PHONY: all models build experiment test test-fast lint fmt clean-results help

help:
	@echo "make experiment NAME=grid1   fetch the model if needed, build, run experiments/\$$NAME.yaml"
	@echo "make test                    the whole test suite (real model included)"
	@echo "make models                  fetch and verify the models into \$$DECLAB_MODELS (default models/)"
	@echo "make lint                    cargo fmt --check and clippy -D warnings"

models:
	@scripts/fetch-models.sh

build:
	$(CARGO) build --release

experiment: models build
	@test -f experiments/$(NAME).yaml || { echo "no experiments/$(NAME).yaml; available: $$(ls experiments | sed 's/\.yaml//' | tr '\n' ' ')"; exit 2; }
	$(BIN) run experiments/$(NAME).yaml

# The real-model tests read the models fetched by `make models` (DECLAB_MODELS).
test: models
	$(CARGO) build --release
	$(CARGO) test --release -- --test-threads=1

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt
