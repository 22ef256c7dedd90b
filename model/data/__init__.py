"""Data I/O: records, their caches, test segments, the simulator, labels from stress and
records from an AE envelope."""
