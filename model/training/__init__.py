"""Training: datasets of windows, the fit, cross-validation, feature selection, the
choice of stream context, the baselines."""
