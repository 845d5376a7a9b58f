"""Benchmarks of optax_swr; run each as ``python -m benchmarks.<name>``."""
