"""The online pipeline: chunks in, predictions and alert events out."""
