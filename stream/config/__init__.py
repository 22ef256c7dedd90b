"""Configuration: every option declared once, resolved from flags, environment and file."""
