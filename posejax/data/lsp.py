"""Placeholder: the lsp builder is being written."""
