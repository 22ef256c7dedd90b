"""Evaluation: error and alert quality of a bundle on labelled data."""
