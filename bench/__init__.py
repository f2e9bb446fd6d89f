"""Benchmarks: `./dev bench NAME` runs bench/NAME.py and prints a table for the README."""
