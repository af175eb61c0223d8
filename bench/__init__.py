"""Benchmarks: gpve and a peer, side by side on this machine, in one invocation."""
