"""The `commitpackft` source: `bigcode/commitpackft`, with OctoPack's OASST (`bigcode/oasst-octopack`) (HF datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.core.hub import load_hub_dataset
from sweeper.data.base import SOURCES, Example, HashSplitSource, hub_root
from sweeper.data.oasst import load_oasst, oasst_examples
from sweeper.schema import DataConfig


class CommitPackFT(HashSplitSource):
    """`bigcode/commitpackft` (one jsonl per language), formatted as OctoPack does (the question is the
    commit subject, a newline, then the old file; the answer the new file), and with `with_oasst` the
    OASST question/answer pairs of the `oasst` source on top, split by content hash. The paper's own
    data, with its released split, is the `guanaco-commits` source. With `path`, from a local folder
    holding `commitpackft/` and `oasst-octopack/` as on the hub (e.g. `hf download --repo-type dataset
    bigcode/commitpackft --local-dir PATH/commitpackft`)."""

    def _load(self, config: DataConfig) -> list[tuple[str, Any]]:
        root = hub_root(config)
        loaded = [(files, _load_commits(files))
                  for files in (f"{root}/commitpackft/data/{language}/data.jsonl" for language in config.languages)]
        return [*loaded, load_oasst(config, "commitpackft")] if config.with_oasst else loaded

    def needs_files(self, config: DataConfig) -> bool:
        return False

    def identity(self, config: DataConfig, files: list[Path] | None = None) -> dict[str, Any]:
        return {files: dataset._fingerprint for files, dataset in self._load(config)}

    def examples(self, config: DataConfig, files: list[Path] | None = None) -> list[Example]:
        examples = []
        for _, dataset in self._load(config):
            if "conversations" in dataset.column_names:
                examples += oasst_examples(dataset)
                continue
            examples += [commit_example(row) for row in dataset]
        return examples


def commit_example(row: dict[str, Any]) -> Example:
    """A CommitPackFT commit as OctoPack formats it: `{subject}\n{old_contents}` -> `{new_contents}`
    (the subject alone for a new file)."""
    subject = (row.get("subject") or row["message"].strip().split("\n")[0]).strip()
    old = row["old_contents"]
    return Example(instruction=f"{subject}\n{old}" if old.strip() else subject, response=row["new_contents"])


def _load_commits(files: str) -> Any:
    return load_hub_dataset(f"{files} for data.source 'commitpackft'", "it needs network access to the HF hub, or "
                            "data.path pointing at a local copy (a folder with commitpackft/ and oasst-octopack/)",
                            "json", data_files=files, split="train")


SOURCES.add("commitpackft", CommitPackFT())
