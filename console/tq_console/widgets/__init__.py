"""The console's widgets: one per module, each fed snapshot parts through ``update``; no I/O."""
