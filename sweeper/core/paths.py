"""Where sweeper keeps things on disk."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent  # a source checkout (provenance: its git sha)
STORAGE_ENV = "SWEEPER_STORAGE"  # checkpoint storage every node of a cluster reaches (s3://..., a shared mount)


def cache_dir() -> Path:
    """Content-addressed cache (micro ladder weights, tokenizers, parameter counts).

    `SWEEPER_CACHE` overrides the default `~/.cache/sweeper`.
    """
    return Path(os.environ.get("SWEEPER_CACHE", Path.home() / ".cache" / "sweeper")).expanduser()
