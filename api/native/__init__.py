"""The native API under /v1: plain JSON answers, gpve's own extensions."""
