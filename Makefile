# remediator: two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LISTEN ?= 127.0.0.1:8080
DATA_DIR ?= var
## Development tokens for `make run`, one per role (webhook posts alerts, read reads the audit, admin pauses).
REMEDIATOR_WEBHOOK_TOKENS ?= dev-token
REMEDIATOR_API_READ_TOKENS ?= dev-read-token
REMEDIATOR_API_ADMIN_TOKENS ?= dev-admin-token

.PHONY: run test lint bench services alertmanager venv clean kube-assets browser screenshots

## Real Kubernetes control-plane binaries (envtest convention) for tests/real_kube; those tests skip without them.
KUBE_ASSETS_SRC ?= ../shared/kube-assets
KUBEBUILDER_ASSETS ?= $(CURDIR)/.kube-assets
export KUBEBUILDER_ASSETS

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Start the daemon on the embedded default (SQLite + file guardrails under ./var), dry-run, shipped playbooks.
run: export REMEDIATOR_WEBHOOK_TOKENS := $(REMEDIATOR_WEBHOOK_TOKENS)
run: export REMEDIATOR_API_READ_TOKENS := $(REMEDIATOR_API_READ_TOKENS)
run: export REMEDIATOR_API_ADMIN_TOKENS := $(REMEDIATOR_API_ADMIN_TOKENS)
run: $(STAMP)
	$(BIN)/remediator serve --dry-run --playbooks playbooks --listen $(LISTEN) --data-dir $(DATA_DIR)

## PostgreSQL and Redis on 127.0.0.1, started when they are not running.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

## The real Alertmanager (and amtool) for the end-to-end tests, from Debian's package.
alertmanager:
	@command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null)

## Debian's headless chromium and its chromedriver for tests/ui/browser and `make screenshots`; those tests skip without them.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "browser: could not install chromium and chromium-driver; the browser tests will skip"

## PNGs of each page of the web UI (docs/screenshots/, linked from README.md), taken by a real browser on a real daemon.
screenshots: $(STAMP) browser
	$(BIN)/python -m tests.ui.browser.screenshots docs/screenshots

## kube-apiserver, kube-controller-manager (and kubectl) unpacked into .kube-assets/, plus etcd (Debian's etcd-server).
## A no-op with a note when $(KUBE_ASSETS_SRC) is absent.
kube-assets:
	@if [ -f $(KUBE_ASSETS_SRC)/unpack.sh ]; then \
	  bash $(KUBE_ASSETS_SRC)/unpack.sh .kube-assets >/dev/null || exit 1; \
	  command -v etcd >/dev/null 2>&1 || \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null) || \
	    echo "kube-assets: could not install etcd-server; the real-Kubernetes tests will skip"; \
	  if command -v etcd >/dev/null 2>&1; then ln -sf "$$(command -v etcd)" .kube-assets/etcd; fi; \
	else \
	  echo "kube-assets: $(KUBE_ASSETS_SRC)/unpack.sh not found; the real-Kubernetes tests will skip"; \
	fi

## ruff, mypy --strict and hadolint (Dockerfile); also provides promtool (Debian's prometheus) for the alert-rule tests.
lint: $(STAMP)
	$(BIN)/ruff check remediator tests
	$(BIN)/mypy remediator
	$(BIN)/hadolint Dockerfile
	@command -v promtool >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) || \
	  echo "lint: could not install promtool (Debian's prometheus); the alert-rule tests will skip"

## Regenerate docs/configuration.md from remediator/settings.py (tests/test_docs.py fails when it is stale).
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python -m remediator.docgen --output docs/configuration.md

## Tests' temporary directories (SQLite stores, etcd, daemons' data dirs) go to memory when /dev/shm is
## there: what the tests prove is ordering and crash-consistency across processes, which a tmpfs keeps
## (a killed process's writes stay in the page cache), not that the disk honours fsync; on disk, the
## storm tests spent a third of their time waiting for it.  TEST_TMP= (empty) keeps pytest's default.
TEST_TMP ?= $(if $(wildcard /dev/shm),/dev/shm/remediator-tests)

test: $(STAMP) services alertmanager kube-assets browser lint
	@tmp="$(if $(TEST_TMP),$(TEST_TMP)-$$$$)"; \
	  $(BIN)/pytest -q -p no:cacheprovider --durations=15 $${tmp:+--basetemp=$$tmp}; rc=$$?; \
	  [ -z "$$tmp" ] || rm -rf "$$tmp"; exit $$rc

## Every benchmark in turn (minutes), then one table of their headline figures (bench/summary.py collects
## what each reports); QUICK=1 runs the smaller sizes.  Dated results are kept in bench/RESULTS.md.
BENCHES := calibrate matcher_bench webhook_bench ingest_bench webhook_loop_bench decision_latency storm_bench sustained_bench \
	replay_bench fake_kube_bench ui_timeline_bench reload_bench
BENCH_RESULTS := $(VENV)/bench-results.jsonl
bench: $(STAMP) services
	@rm -f $(BENCH_RESULTS)
	@for b in $(BENCHES); do echo "== bench/$$b.py"; \
	  args=$$(case $$b in storm_bench) echo "--backend both --no-record $(if $(QUICK),--alerts 2000)";; \
	    sustained_bench) echo "--no-record";; esac); \
	  BENCH_RESULTS=$(BENCH_RESULTS) QUICK=$(QUICK) $(BIN)/python bench/$$b.py $$args || exit 1; done
	@$(BIN)/python bench/summary.py $(BENCH_RESULTS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
