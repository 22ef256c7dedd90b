"""The model bundle: its format on disk and its inference."""
