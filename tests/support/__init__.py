"""Helpers the tests and the benchmark (bench/) share; nothing here needs pytest."""
