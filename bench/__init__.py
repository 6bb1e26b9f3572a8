"""Benchmarks of clear_core: robustness, noise detection and cost (``python -m bench.<script> --help``)."""
