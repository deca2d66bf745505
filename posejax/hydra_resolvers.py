"""OmegaConf resolvers used by ``conf/``; imported by every Hydra entry point."""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_NAME = 120


def short_name(text: str, max_length: int = MAX_NAME) -> str:
    """``text`` if short enough, else a readable prefix plus a hash of the whole text.

    Run directories are named after the command-line overrides (so re-running a command resumes
    its run); a long override list would exceed the file-system's 255-byte name limit.
    """
    text = str(text)
    if len(text) <= max_length:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    return f"{text[: max_length - 13]}-{digest}"


if not OmegaConf.has_resolver("posejax.short"):
    OmegaConf.register_new_resolver("posejax.short", short_name)
