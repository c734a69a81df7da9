# sockhop: `make run` starts every service on loopback; `make test` runs the whole suite; `make bench` measures.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

PREFIX ?= $(HOME)/.local
SYSTEM ?= /opt/sockhop
PIP_ARGS ?=

.PHONY: run install install-system test test-deps lint bench clean

$(BIN)/sockhop: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(BIN)/sockhop
	$(BIN)/sockhop up

# `sockhop` on your PATH: a link in $(PREFIX)/bin (~/.local/bin) to this checkout's .venv/bin/sockhop (VENV may be
# absolute: the link is made from its absolute path).
install: $(BIN)/sockhop
	mkdir -p $(PREFIX)/bin
	ln -sf $(abspath $(BIN))/sockhop $(PREFIX)/bin/sockhop
	@echo "sockhop: installed $(PREFIX)/bin/sockhop (is $(PREFIX)/bin on your PATH? \`command -v sockhop\` says)"

# For a server (the units in contrib/systemd): its own virtual environment in $(SYSTEM), the command at
# /usr/local/bin/sockhop. Run as root; DESTDIR installs under another root.
install-system:
	$(PYTHON) -m venv $(DESTDIR)$(SYSTEM)
	$(DESTDIR)$(SYSTEM)/bin/pip install -q $(PIP_ARGS) .
	mkdir -p $(DESTDIR)/usr/local/bin
	ln -sf $(SYSTEM)/bin/sockhop $(DESTDIR)/usr/local/bin/sockhop

# The real clients the tests use come from Debian; install whichever command is missing.
test-deps:
	bash tests/install-clients.sh

# The suite waits on sockets and child processes far more than it computes: four workers (pytest-xdist) finish it
# in about half the time of one, even on two cores. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 4

test: $(BIN)/sockhop test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(BIN)/sockhop
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/sockhop
	bash tests/install-clients.sh bench/apt-packages.txt
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/web.py $(WEB_BENCH_ARGS)
	$(BIN)/python bench/dns.py $(DNS_BENCH_ARGS)
	$(BIN)/python bench/dnsupdate.py $(DNSUPDATE_BENCH_ARGS)
	$(BIN)/python bench/mail.py $(MAIL_BENCH_ARGS)
	$(BIN)/python bench/mailqueue.py $(MAILQUEUE_BENCH_ARGS)
	$(BIN)/python bench/relay.py $(RELAY_BENCH_ARGS)
	$(BIN)/python bench/https.py $(HTTPS_BENCH_ARGS)
	$(BIN)/python bench/dashboard.py $(DASHBOARD_BENCH_ARGS)
	$(BIN)/python bench/proxy.py $(PROXY_BENCH_ARGS)
	$(BIN)/python bench/soak.py $(SOAK_BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info bench/results bench/.build
