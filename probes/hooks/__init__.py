"""The probes proper: forward/backward hooks that record kernels, per-head attention statistics and outputs while a model trains."""
