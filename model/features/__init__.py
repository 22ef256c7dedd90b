"""Window features: the registry, compiled kernels, MFCCs and the stream context."""
