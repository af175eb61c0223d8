"""Proxmox-VE-compatible endpoints under /api2/json."""
