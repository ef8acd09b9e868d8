# trailerlink — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
PY := .venv/bin/python
PYTEST_ARGS ?=
ONLY ?=

.PHONY: help setup gen test lint typecheck kafka kafka-stop bench demo images cluster cluster-stop proto-snapshot clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: ## install everything (Debian packages, uv, Python workspace, generated code, Kafka jars)
	@scripts/bootstrap.sh

gen: ## regenerate the Python event contracts from proto/
	@$(PY) scripts/gen_proto.py

test: setup ## run the whole test suite against real peers (installs what it needs first)
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

lint: setup ## ruff: lint rules and the one formatting (ruff format rewrites; this only checks)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup ## mypy over libs and services
	.venv/bin/mypy

kafka: setup ## start a dev broker on 127.0.0.1:9092 with the registry's topics
	@$(PY) -m trailerlink_testing.kafka start --dir .run/kafka --port 9092 --controller-port 9093

kafka-stop: ## stop the dev broker
	@$(PY) -m trailerlink_testing.kafka stop --dir .run/kafka

bench: setup ## benchmarks: prints a table, writes bench-results.json (ONLY=<id prefix>)
	$(PY) -m benchmarks $(if $(ONLY),--only $(ONLY),)

images: setup ## build every service image with podman (localhost/trailerlink/<service>:<version>)
	@scripts/images.sh

cluster: setup ## a single-machine Kubernetes (real API server, kwok nodes; NODE=real: containerd + kubelet here); KUBECONFIG=.run/cluster/kubeconfig
	@$(if $(filter real,$(NODE)),scripts/images.sh && scripts/images.sh pause kafka &&) \
	  $(PY) -m trailerlink_testing.cluster start --dir .run/cluster --node $(or $(NODE),kwok)

cluster-stop: ## stop the cluster `make cluster` started (and sweep a real node's host changes)
	@$(PY) -m trailerlink_testing.cluster stop --dir .run/cluster

demo: setup ## a trailer day into a real PACS (see README for what exists yet)
	@$(PY) scripts/demo.py

proto-snapshot: gen ## accept the current proto as the compatibility baseline (additions only)
	$(PY) scripts/proto_snapshot.py --write

clean: ## remove the virtualenv, generated code and run state
	rm -rf .venv .run libs/events/src/trailerlink_events/_generated bench-results.json

dashboards: ## regenerate monitoring/dashboards/*.json from monitoring/dashboards.py (never edit the JSON)
	$(PY) monitoring/dashboards.py

charts-sync: dashboards ## copy the topic registry, alert rules and dashboards into the central chart
	cp proto/topics.yaml charts/central/files/topics.yaml
	rm -f charts/central/files/rules/*.yaml charts/central/files/dashboards/*.json
	cp monitoring/rules/*.yaml charts/central/files/rules/
	cp monitoring/dashboards/*.json charts/central/files/dashboards/

charts: setup ## lint, render and validate both Helm charts offline (tests/charts)
	$(PY) -m pytest tests/charts $(PYTEST_ARGS)

soak: setup ## long fault-injection run: >= 200 images through kills, broker restarts, PACS outage, link cuts
	TRAILERLINK_SOAK=1 $(PY) -m pytest tests/e2e -m slow $(PYTEST_ARGS)
