"""Operator tools: the local services, the benchmark and the soak test."""
