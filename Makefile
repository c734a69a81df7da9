# sockhop: `make run` starts every service on loopback; `make test` runs the whole suite; `make bench` measures.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_LIST := tests/apt-packages.txt

.PHONY: run test test-deps lint bench clean

$(BIN)/sockhop: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/sockhop
	$(BIN)/sockhop up

# The real clients the tests use come from Debian; install whichever command is missing.
test-deps:
	@missing=$$(grep -v '^#' $(APT_LIST) | while IFS=: read -r pkg cmd; do \
	  cmd=$$(echo $$cmd); [ -n "$$pkg" ] && ! command -v "$$cmd" >/dev/null 2>&1 && echo "$$pkg"; done | sort -u); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(BIN)/sockhop test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(BIN)/sockhop
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/sockhop
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/web.py $(WEB_BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info bench/results bench/.build
