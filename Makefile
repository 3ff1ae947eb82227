# The two commands of the README: `make demo` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KPP    := $(BIN)/kpp
STAMP  := $(VENV)/.installed

.PHONY: demo test faults soak bench stack-up stack-down stack-status venv clean tools

venv: $(STAMP)

# Tools the tests run that are not Python packages, pinned, in the project's state folder.
# helm: the chart tests (tests/deploy/test_helm_chart.py) lint and render the chart with it.
TOOLS        := .kpp/tools
HELM_VERSION := v4.3.2
HELM         := $(TOOLS)/helm
HELM_STAMP   := $(TOOLS)/.helm-$(HELM_VERSION)
# Go from PATH, else where its official archive installs (a PATH without it is common in CI).
GO           ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

## tools: install the pinned helm into .kpp/tools (skipped when that version is there; needs Go)
tools:
	@if [ -x $(HELM) ] && [ -f $(HELM_STAMP) ]; then exit 0; fi; \
	[ -x "$(GO)" ] || { echo "Go is needed to install helm $(HELM_VERSION) (go install)"; exit 1; }; \
	mkdir -p $(TOOLS) && rm -f $(TOOLS)/.helm-* && \
	echo "installing helm $(HELM_VERSION) into $(TOOLS)" && \
	GOBIN=$(abspath $(TOOLS)) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) && touch $(HELM_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $(STAMP)

## demo: start the stack and the simulated nodes, run every pipeline stage, print a live summary
demo: $(STAMP)
	$(KPP) stack up
	$(KPP) demo

## test: start the stack, run the whole test suite (the fault suite included), stop what this target started
test: $(STAMP) tools
	@if $(KPP) stack status >/dev/null 2>&1; then keep=1; fi; \
	$(KPP) stack up || exit 1; \
	status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ -z "$$keep" ]; then $(KPP) stack down; fi; \
	exit $$status

## faults: only the whole-system fault suite (~5 min, 50 simulated nodes; private Kafka and
## VictoriaMetrics). `make test` runs it too.
faults: $(STAMP)
	$(KPP) stack up
	$(BIN)/pytest tests/faults -q $(PYTEST_ARGS)

## soak: N nodes for D minutes, RSS and lag into bench/out/ (SOAK_ARGS="--nodes 20 --minutes 2")
soak: $(STAMP)
	$(KPP) stack up
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

## bench: run the benchmarks and keep the results in bench/RESULTS.md
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(KPP) stack up
	$(BIN)/python bench/run.py

stack-up: $(STAMP)
	$(KPP) stack up

stack-down: $(STAMP)
	$(KPP) stack down

stack-status: $(STAMP)
	$(KPP) stack status

clean: stack-down
	rm -rf .kpp $(VENV)
