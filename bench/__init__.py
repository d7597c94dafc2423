"""Benchmarks for RelayForge, each reported as ratios to a baseline measured in the same run.

`python -m bench` measures relaying against a real Synapse; `bench/vault_open.py` the vault.
"""
