"""A small on-disk memo for results that are slow to compute and fixed by their inputs plus the
versions of the libraries that computed them (resolved method configs, parameter counts).

Resolving a peft config or counting a model needs torch + transformers + peft (~4 s of imports on a
small machine); with the memo, `sweeper plan` on a space seen before imports none of them.
"""

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any

from sweeper.core import provenance
from sweeper.core.io import atomic_write_json
from sweeper.core.paths import cache_dir

VERSIONED = ("sweeper", "torch", "transformers", "peft")


def _versions() -> list[str]:
    installed = provenance.package_versions()
    return [installed.get(name, "absent") for name in VERSIONED]


class DiskMemo:
    """`memo.get(key, compute)`: the stored value for a JSON-able key, else `compute()` (stored)."""

    def __init__(self, name: str):
        self.path = cache_dir() / f"{name}.json"
        try:
            self.known: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.dirty = False
        self.versions = _versions()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        digest = hashlib.sha256(json.dumps([key, self.versions], sort_keys=True).encode()).hexdigest()[:24]
        if digest not in self.known:
            self.known[digest] = compute()
            self.dirty = True
        return self.known[digest]

    def save(self) -> None:
        if self.dirty:
            # A read-only cache only costs a recomputation next time.
            with contextlib.suppress(OSError):
                atomic_write_json(self.path, self.known)
            self.dirty = False
