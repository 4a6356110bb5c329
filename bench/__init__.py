"""Benchmarks (`make bench`): each prints its figures beside a baseline measured in the same
run, and writes JSON (with the machine it ran on) to bench/results/."""
