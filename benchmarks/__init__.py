"""Benchmarks of posgen (not shipped in the wheel): ``make bench``."""
