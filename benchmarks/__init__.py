"""Reproducible measurements of trackerd's performance claims. Run ``python -m benchmarks``."""
