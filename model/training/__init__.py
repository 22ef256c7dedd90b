"""Training: datasets of windows, the fit, cross-validation, feature selection."""
