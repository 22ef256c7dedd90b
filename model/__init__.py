"""labquake.model — everything offline and numeric: features, network, simulator, training."""
