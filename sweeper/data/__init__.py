"""Instruction data: the sources registry (`guanaco-commits`, `commitpackft`, `oasst`, `local-code`, `git`),
split, pack, prepare.

Importing the package registers every shipped source; each source imports only `data.base` (and
`commitpackft` the `oasst` loader, for `with_oasst`).
"""

from sweeper.data import commitpackft, git, guanaco_commits, local_code, oasst  # noqa: F401 (register the sources)
from sweeper.data.base import (
    IGNORE,
    SOURCES,
    Example,
    HashSplitSource,
    PackedData,
    Source,
    octopack_prompt,
    pack,
    prepare_data,
    split_examples,
    tokenizer_hash,
)

__all__ = ["IGNORE", "SOURCES", "Example", "HashSplitSource", "PackedData", "Source", "octopack_prompt", "pack", "prepare_data",
           "split_examples", "tokenizer_hash"]
