"""labquake.stream — everything online: wire format, sources, windows, pipeline, sinks."""
