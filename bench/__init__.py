"""Hand-run benchmarks; see README."""
