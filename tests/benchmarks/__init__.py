"""Benchmarks: `python -m tests.benchmarks.run [--quick]` (excluded from the pytest run)."""
