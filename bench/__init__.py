"""Benchmarks: each figure is measured next to its baseline, in the same run, on the same store.

Results go to BENCHMARKS.md; generated data and raw results go to bench/out/ (not in git).
"""
