# Convenience targets; the README's two commands need nothing but Python and pip.
.PHONY: setup test lab run

setup:
	python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev,lab]"

test:
	python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[dev]" && .venv/bin/python -m pytest

lab: setup
	.venv/bin/jupyter lab notebooks/

run:
	.venv/bin/dmft-probe run --scale 4
