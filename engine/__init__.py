"""gpve engine: commands in, events out, state as a projection of a replicated log."""
