"""Benchmarks: scripts run by hand (`python bench/NAME.py`), outside the package; nothing in tasks/ or flows/
imports them (pyproject's import contract `bench-outside`)."""
