"""Placeholder: the synthetic builder is being written."""
