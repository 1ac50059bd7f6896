"""Benchmarks (run each ``bench/bench_*.py`` as a script; ``make bench`` runs them all)."""
