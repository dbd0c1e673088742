# The two commands of the README, and a few more. Everything installs itself on a fresh machine.
.PHONY: demo deploy deploy-distributed test lint bench bench-deployment emulator

# Run every example DAG against the emulator with `airflow dags test`, print a table of results.
demo:
	bash scripts/demo.sh

# The example DAGs in a real multi-process Airflow 3 (api-server, scheduler, triggerer); leaves the UI up.
deploy:
	bash scripts/deploy.sh

# The same on PostgreSQL, Redis and the CeleryExecutor, with two schedulers, triggerers and workers.
deploy-distributed:
	bash scripts/deploy-distributed.sh

# ruff, mypy, the suite on Airflow 3.3.2 and 2.11.2, benchmarks in --quick mode.
test:
	bash scripts/test.sh

lint:
	V=$$(bash scripts/venv.sh 3.3.2) && $$V/bin/ruff check airflow_provider_noxus tests dags_examples benchmarks scripts && $$V/bin/mypy

# The full benchmarks (about 45 minutes), bench-deployment included; results in benchmarks/results/.
bench:
	bash scripts/system-deps.sh distributed && V=$$(bash scripts/venv.sh 3.3.2) && \
		$$V/bin/python benchmarks/run_all.py

# What a Noxus task costs the whole deployment (PostgreSQL, Redis, Celery), side by side with an empty
# @task: N=200 per variant (17 minutes on an idle 2-core machine). ARGS="--tasks 20" for a quick look,
# ARGS=--worker-preload with the Celery worker preloading the provider.
bench-deployment:
	bash scripts/system-deps.sh distributed && V=$$(bash scripts/venv.sh 3.3.2) && \
		$$V/bin/python benchmarks/deployment_cost.py $(ARGS)

# The emulator alone, on port 8765 with the demo key.
emulator:
	V=$$(bash scripts/venv.sh 3.3.2) && $$V/bin/python -m airflow_provider_noxus.emulator --port 8765
