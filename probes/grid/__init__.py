"""Grids of runs: sweeps over N, H or L, their resumable store and executors, learning-rate grids, the variant table and `reproduce`."""
