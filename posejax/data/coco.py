"""Placeholder: the coco builder is being written."""
