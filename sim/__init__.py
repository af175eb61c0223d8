"""Deterministic cluster simulator: N real engines under a simulated clock, network, disk and hypervisor."""
