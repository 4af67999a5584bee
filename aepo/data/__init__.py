"""Datasets: reading problem/answer files and benchmarks, and writing verl RL parquet files."""
