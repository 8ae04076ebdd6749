# pinapp: every target sets itself up (virtualenv, packages, local stack) from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
HELM := .stack/tools/helm
HELM_VERSION := v4.3.2
WORKERS ?= 1
export PATH := $(BIN):$(PATH)

.PHONY: help setup lint format demo test unit helm integration bench bench-queries profile soak race stack-up stack-down stack-status clean

help:
	@echo "make demo    - run the pipeline locally (stack, worker(s), archiver, singer, generator); WORKERS=2 for two; Ctrl-C stops it"
	@echo "make lint    - the gates: ruff (lint, format), mypy, and the layers' import rules (make test runs it first)"
	@echo "make format  - ruff's formatting and safe fixes, applied"
	@echo "make test    - make lint, then unit and integration tests against a real local stack"
	@echo "make soak    - ten minutes of steady traffic with a worker killed every minute, then an audit (not in CI)"
	@echo "make bench   - throughput (1 and 2 workers), freshness, recovery, live globe, archive and singer benchmarks (results: docs/benchmarks.md)"
	@echo "               BASELINE=<commit> runs that commit's code too, alternating, with the ratio of medians; BENCH_ARGS='--only throughput --runs 5'"
	@echo "make bench-queries - every query users see, timed on the rollups and on the raw rows, at a fill of hours of traffic"
	@echo "               QUERIES_ARGS='--hours 1 --rate 2000 --windows 15,60 --reuse-fill' (24 h: --hours 24 --rate 200 --windows 360,1440)"
	@echo "make profile - where one worker's CPU goes while it drains a backlog (py-spy; PROFILE_ARGS='--events 150000 --seconds 20')"
	@echo "make race    - the recovery-race reproduction (commit guards off) RACE_RUNS times (default 20), with how many passed"
	@echo "make stack-up | stack-down | stack-status - the local Kafka, MariaDB and S3 server"

setup: $(STAMP)

# Debian's librdkafka-dev first: pinapp singer's C loop (pinapp/singer/_rdkafka.c, built by
# setup.py) compiles with its headers (and links to the confluent-kafka wheel's librdkafka).
# Python packages into .venv; the pages' npm packages (d3-geo, topojson-client, world-atlas,
# Chart.js) into frontend/node_modules. Both from their registries,
# pinned by lock files. Then Debian's jemalloc, which workers run on (pinapp/topology/allocator.py says why).
$(STAMP): pyproject.toml setup.py pinapp/singer/_rdkafka.c constraints.txt frontend/package-lock.json
	@missing=""; \
	pkg-config --exists rdkafka 2>/dev/null || missing="$$missing librdkafka-dev pkg-config"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	$(PYTHON) -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's$$missing (pinapp singer's C loop builds with them)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing to build pinapp singer's C loop; run: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,test]'
	npm ci --prefix frontend --no-audit --no-fund --loglevel=error
	$(BIN)/python -c 'from pinapp.tools.stack.packages import ensure_jemalloc; ensure_jemalloc()'
	touch $@

stack-up: setup
	pinapp stack up

stack-down: setup
	pinapp stack down

stack-status: setup
	pinapp stack status

demo: setup
	pinapp stack up
	pinapp db migrate
	@echo
	@echo "pinapp is starting: $(WORKERS) worker(s), an S3 archiver, and a generator writing log files"
	@echo "(.stack/local/logs/app.log, rotated every 50 MB) at 2,000 events/s that singer ships to Kafka."
	@echo "  Engagement:  .venv/bin/pinapp query events-per-minute   (also top-categories, top-countries, most-repinned)"
	@echo "  Trends:      a pin takes off 6 minutes in: Trending now on the dashboard, gold on the globe;"
	@echo "               .venv/bin/pinapp query trending-pins --minutes 5   (also trending-categories, trending-countries)"
	@echo "  Experiments: http://127.0.0.1:6066/experiments  and  .venv/bin/pinapp experiments   (checkout_flow has a bug)"
	@echo "  Alerts:      the alerter process logs each alert once (trends, SRM, pipeline health);"
	@echo "               PINAPP_ALERTS__WEBHOOK_URL=https://... make demo  sends them to a webhook too"
	@echo "  Ad-hoc SQL:  .venv/bin/pinapp query --sql 'SELECT COUNT(*) FROM repins'"
	@echo "  Dashboard:   http://127.0.0.1:6066/          Live globe: http://127.0.0.1:6066/globe"
	@for i in $$(seq 0 $$(($(WORKERS) - 1))); do echo "  Worker $$((i + 1)):    http://127.0.0.1:$$((6066 + i))/health  /metrics  /tables  /pins/<pin_id>  /dedup"; done
	@echo "  Archiver:    http://127.0.0.1:6166/health  /metrics"
	@echo "  Audit:       .venv/bin/pinapp audit   (events not processed yet are pending; --wait 60 waits them out)"
	@echo "  S3 archive:  .venv/bin/pinapp archive ls   and   .venv/bin/pinapp archive verify"
	@echo "  Log shipping: .venv/bin/pinapp singer status"
	@echo "  Dead letters: topic events-dlq;  stack: .venv/bin/pinapp stack status"
	@echo "Ctrl-C stops the worker and generator; 'make stack-down' stops the services."
	@echo
	honcho start -f Procfile -p 6066 -c worker=$(WORKERS)

# The gates every change passes (configured in pyproject.toml): ruff's lint rules and format,
# mypy on pinapp/, agents/, tables/ and config/, and import-linter's contracts for the layers.
lint: setup
	ruff check .
	ruff format --check .
	mypy
	lint-imports

format: setup
	ruff format .
	ruff check --fix .

test: setup lint $(HELM)
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test pytest; rc=$$?; PINAPP_PROFILE=test pinapp stack down; exit $$rc

unit: setup $(HELM)
	pytest tests/unit

# helm, for the chart's tests (tests/unit/deploy/test_helm_chart.py: helm template, then every object
# validated offline against the Kubernetes schemas), from the Go module proxy into .stack/tools.
# A cold build fetches ~180 modules and compiles for a few minutes on 2 cores; then it is cached.
helm: $(HELM)
$(HELM):
	@command -v go >/dev/null || { echo "building helm needs Go: apt-get install golang-go, or https://go.dev/dl/" >&2; exit 1; }
	GOBIN=$(CURDIR)/.stack/tools GOFLAGS=-mod=mod go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

integration: setup
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test pytest tests/integration

soak: setup
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test pytest -m slow --timeout 2400 tests/integration/test_soak.py; rc=$$?; PINAPP_PROFILE=test pinapp stack down; exit $$rc

# The cluster fault scenarios (tests/integration/test_cluster.py, docs/reliability.md): a
# three-node Kafka cluster in network namespaces, so root. make test runs the short ones.
chaos: setup
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test pytest -m 'not slow' -s tests/integration/test_cluster.py; rc=$$?; PINAPP_PROFILE=test pinapp stack down; exit $$rc

bench: setup
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test python -m bench.run $(if $(BASELINE),--baseline $(BASELINE)) $(BENCH_ARGS)

bench-queries: setup
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test python -m bench.queries $(QUERIES_ARGS)

profile: setup
	PINAPP_PROFILE=test pinapp stack up
	PINAPP_PROFILE=test python -m bench.profile $(PROFILE_ARGS)

RACE_RUNS ?= 20
race: setup
	PINAPP_PROFILE=test pinapp stack up
	@mkdir -p test-output; passed=0; for i in $$(seq 1 $(RACE_RUNS)); do \
	  if PINAPP_PROFILE=test pytest -q tests/integration/test_recovery_race.py > test-output/race-$$i.log 2>&1; \
	  then passed=$$((passed + 1)); echo "race run $$i: passed"; else echo "race run $$i: FAILED (test-output/race-$$i.log)"; fi; \
	done; echo "race: $$passed of $(RACE_RUNS) runs passed"; test $$passed = $(RACE_RUNS)

clean:
	-pinapp stack down
	-PINAPP_PROFILE=test pinapp stack down
	rm -rf $(VENV) .stack test-output bench-output frontend/node_modules
