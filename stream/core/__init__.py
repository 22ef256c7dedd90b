"""The bottom layer: the vocabulary every other part of labquake builds on."""
