# AdGen developer entry points. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pin torch first so the diffusion extra does not pull a newer (multi-GB) build. On a GPU host,
# set TORCH to the build matching its CUDA, e.g. TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'.
TORCH ?= torch==2.13.0
MODELS_DIR ?= models
OUT ?= out
# `buf breaking` compares the protos with this git ref (the previous commit by default).
BUF_AGAINST ?= HEAD~1
STAMP := $(VENV)/.installed
# The Korean overlay font, from the pretendard npm package (package.json) that `npm ci` installs.
OVERLAY_FONT := node_modules/pretendard/dist/public/static/Pretendard-Bold.otf

.PHONY: help system-deps install readme protos check-protos node-gen check-node-gen lint buf test test-fast tiny-models demo clean

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml package.json package-lock.json clients/node/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund --silent
	npm ci --no-audit --no-fund --silent --prefix clients/node
	@test -f $(OVERLAY_FONT) || { echo "npm ci did not install the overlay font $(OVERLAY_FONT)"; exit 1; }
	touch $@

install: $(STAMP) ## Create the virtualenv and install everything (Python, the buf CLI, the overlay font, the Node client).

protos: $(STAMP) node-gen ## Regenerate the committed Python stubs (and the TypeScript client) from protos/.
	$(BIN)/python scripts/gen_protos.py

check-protos: $(STAMP) ## Fail if the committed stubs drifted from protos/.
	$(BIN)/python scripts/gen_protos.py --check

node-gen: $(STAMP) ## Regenerate the committed TypeScript client in clients/node/gen from protos/.
	cd clients/node && ../../node_modules/.bin/buf generate

check-node-gen: $(STAMP) ## Fail if clients/node/gen drifted from protos/, or the TypeScript does not type-check (strict).
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	  (cd clients/node && ../../node_modules/.bin/buf generate --output "$$scratch") && \
	  diff -r "$$scratch/gen" clients/node/gen || { echo "clients/node/gen is stale: run make node-gen"; exit 1; }
	npm run --silent typecheck --prefix clients/node

buf: $(STAMP) ## buf lint, format and breaking-change checks on protos/.
	npx buf lint
	npx buf format --diff --exit-code
	@if git rev-parse --verify --quiet '$(BUF_AGAINST)^{commit}' >/dev/null; then \
	  echo "buf breaking --against .git#ref=$(BUF_AGAINST)"; \
	  npx buf breaking --against '.git#ref=$(BUF_AGAINST)'; \
	else echo "buf breaking: no $(BUF_AGAINST) to compare with (first commit); skipped"; fi

readme: $(STAMP) ## Regenerate the README's settings and memory-plan tables from the code.
	$(BIN)/python scripts/readme_settings.py

lint: $(STAMP) ## ruff, ruff format, mypy (strict) and the README's settings tables.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lib services clients tests bench scripts
	$(BIN)/python scripts/readme_settings.py --check

system-deps: ## Check the Debian packages the suite needs beyond Python, Node and make (CI installs it in .ci/run).
	@command -v chromium >/dev/null || { echo "missing chromium (browser test): sudo apt-get install chromium"; exit 1; }
	@command -v kubectl >/dev/null || { echo "missing kubectl (manifest tests): sudo apt-get install kubernetes-client"; exit 1; }

test: system-deps install check-protos check-node-gen buf lint ## Install, then run every check and the whole test suite.
	$(BIN)/pytest

test-fast: $(STAMP) ## Only the unit tests.
	$(BIN)/pytest tests/unit

tiny-models: $(STAMP) ## Build the tiny random pipelines used by tests and the demo.
	$(BIN)/adgen-diffusion build-tiny --models-dir $(MODELS_DIR)

demo: install tiny-models ## Start the three services on loopback, create and edit an ad into out/.
	$(BIN)/python scripts/demo.py --models-dir $(MODELS_DIR) --out $(OUT)

clean: ## Remove generated outputs (keeps the virtualenv and models).
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache test-artifacts
