"""Benchmarks: `training` backs `dmft-probe bench`; the scripts beside it measure figures quoted in the docs."""
