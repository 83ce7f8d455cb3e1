"""The `oasst` source: the OpenAssistant conversations OctoPack trained on, `bigcode/oasst-octopack`.

OctoPack filtered OASST1 (`dataset/oasst/filter_oasst.py` in bigcode-project/octopack: 8,587 conversation
trees, every language) and released one conversation per line of `oasst_octopack.jsonl`, with columns
`conversations` (the messages in order, each with its `text`) and `lang`. Its README: "We only keep the
first two messages of each conversation tree, which are the question and answer", so an example is the
first message -> the second; a tree without an answer gives none. With `data.path`, from a local folder
holding `oasst-octopack/oasst_octopack.jsonl` as on the hub; else from the hub itself. `commitpackft` with
`with_oasst` adds these examples to the commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweeper.core.errors import UserError
from sweeper.core.hub import load_hub_dataset
from sweeper.data.base import SOURCES, Example, HashSplitSource, hub_root
from sweeper.schema import DataConfig

if TYPE_CHECKING:
    from pathlib import Path

FILE = "oasst-octopack/oasst_octopack.jsonl"


def load_oasst(config: DataConfig, asked_by: str) -> tuple[str, Any]:
    """(the file, its dataset) for `config.path` or the hub; `asked_by` names the source in errors."""
    root = hub_root(config)
    files = f"{root}/{FILE}"
    dataset = load_hub_dataset(
        f"{files} for data.source '{asked_by}'", "it needs network access to the HF hub, or data.path pointing "
        "at a local copy (a folder holding oasst-octopack/oasst_octopack.jsonl)", "json", data_files=files,
        split="train")
    if "conversations" not in dataset.column_names:
        raise UserError(f"data.source '{asked_by}': {files} has no column 'conversations'; expected "
                        "bigcode/oasst-octopack's conversations (a list of messages with their text) and lang")
    return files, dataset


def oasst_examples(dataset: Any) -> list[Example]:
    """OctoPack's OASST examples: each conversation's first message (the question) -> its second (the
    answer), whitespace kept as released."""
    examples = []
    for row in dataset:
        messages = row["conversations"] or []
        if len(messages) >= 2 and messages[0]["text"].strip() and messages[1]["text"].strip():
            examples.append(Example(messages[0]["text"], messages[1]["text"]))
    return examples


class OasstOctopack(HashSplitSource):
    """`bigcode/oasst-octopack` alone: OctoPack's OASST question/answer pairs, split by content hash."""

    def needs_files(self, config: DataConfig) -> bool:
        return False

    def identity(self, config: DataConfig, files: list[Path] | None = None) -> dict[str, Any]:
        path, dataset = load_oasst(config, "oasst")
        return {path: dataset._fingerprint}

    def examples(self, config: DataConfig, files: list[Path] | None = None) -> list[Example]:
        return oasst_examples(load_oasst(config, "oasst")[1])


SOURCES.add("oasst", OasstOctopack())
