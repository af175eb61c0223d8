"""Hypervisor layer: QEMU command lines from guest configs, the QMP driver, storage backends."""
