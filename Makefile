# The two commands of the README, and the steps they stand on.
#   make demo   set up everything, run the pipeline end to end on the embedded defaults
#   make test   set up everything, start Kafka, run the whole test suite, stop Kafka

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install kafka-start kafka-stop lint bench-detection bench-core clean

NATIVE := native/Cargo.toml native/pyproject.toml native/distillwatch_native.pyi $(wildcard native/src/*.rs)

# The Rust edge (native/) is built by maturin with cargo, from PyPI and crates.io.
$(STAMP): pyproject.toml $(NATIVE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet ./native
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

kafka-start:
	bash infra/kafka.sh start

kafka-stop:
	bash infra/kafka.sh stop

demo: install
	@bash infra/kafka.sh start
	@$(BIN)/distillwatch demo; status=$$?; bash infra/kafka.sh stop; exit $$status

test: install
	@bash infra/kafka.sh start
	@$(BIN)/pytest; status=$$?; bash infra/kafka.sh stop; exit $$status

lint: install
	$(BIN)/ruff check models schemas streams simulator tests bench
	$(BIN)/mypy models schemas

bench-detection: install
	$(BIN)/python bench/detection.py

bench-core: install
	$(BIN)/python bench/core.py

clean:
	bash infra/kafka.sh stop || true
	rm -rf .kafka .state .data $(VENV)
