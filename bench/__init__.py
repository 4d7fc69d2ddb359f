"""Benchmarks: scripts that start real federations and print figures (python -m bench.NAME)."""
