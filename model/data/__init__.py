"""Data I/O: records, their caches, test segments and the simulator."""
