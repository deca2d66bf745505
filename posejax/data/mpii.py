"""Placeholder: the mpii builder is being written."""
