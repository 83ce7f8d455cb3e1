"""Datasets from the HF hub, with one error for "cannot get the data here".

Offline, `datasets` and `huggingface_hub` raise many types (ConnectionError, FileNotFoundError,
OfflineModeIsEnabled, HfHubHTTPError, DatasetNotFoundError, ...): each means the same to a user, so
each becomes one `UserError` line naming what was asked for, why it failed, and what to do instead.
"""

from __future__ import annotations

from typing import Any

from sweeper.core.errors import UserError, first_line


def load_hub_dataset(what: str, instead: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset(*args, **kwargs)`; on any failure a UserError: `cannot load {what}
    ({reason}); {instead}`, where `instead` says how to give the data locally."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as err:  # see the module docstring: every type means "cannot get the data"
        raise UserError(f"cannot load {what} ({first_line(err)}); {instead}") from None
