"""The `commitpackft` source: `bigcode/commitpackft` and the OASST mix `bigcode/guanaco-commits` (HF datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.core.hub import load_hub_dataset
from sweeper.data.base import SOURCES, Example, HashSplitSource
from sweeper.schema import DataConfig

HUB_ROOT = "hf://datasets/bigcode"


class CommitPackFT(HashSplitSource):
    """`bigcode/commitpackft` (one jsonl per language), formatted as OctoPack does (the question is the
    commit subject, a newline, then the old file; the answer the new file), and with `with_oasst` the
    train split of `bigcode/guanaco-commits` (its prompt/completion pairs: OASST conversations and,
    already, commits) on top, split by content hash. The paper's own data, with its released split, is
    the `guanaco-commits` source. With `path`, from a local folder holding `commitpackft/` and
    `guanaco-commits/` as on the hub (e.g. `hf download --repo-type dataset bigcode/commitpackft
    --local-dir PATH/commitpackft`)."""

    def _load(self, config: DataConfig) -> list[tuple[str, Any]]:
        root = str(Path(config.path).expanduser()) if config.path else HUB_ROOT
        parts = [("json", f"{root}/commitpackft/data/{language}/data.jsonl") for language in config.languages]
        if config.with_oasst:
            parts.append(("parquet", f"{root}/guanaco-commits/data/train-*.parquet"))
        return [(files, _load_dataset(builder, files)) for builder, files in parts]

    def needs_files(self, config: DataConfig) -> bool:
        return False

    def identity(self, config: DataConfig, files: list[Path] | None = None) -> dict[str, Any]:
        return {files: dataset._fingerprint for files, dataset in self._load(config)}

    def examples(self, config: DataConfig, files: list[Path] | None = None) -> list[Example]:
        examples = []
        for _, dataset in self._load(config):
            if "prompt" in dataset.column_names:
                examples += [Example(row["prompt"], row["completion"]) for row in dataset]
                continue
            examples += [commit_example(row) for row in dataset]
        return examples


def commit_example(row: dict[str, Any]) -> Example:
    """A CommitPackFT commit as OctoPack formats it: `{subject}\n{old_contents}` -> `{new_contents}`
    (the subject alone for a new file)."""
    subject = (row.get("subject") or row["message"].strip().split("\n")[0]).strip()
    old = row["old_contents"]
    return Example(instruction=f"{subject}\n{old}" if old.strip() else subject, response=row["new_contents"])


def _load_dataset(builder: str, files: str) -> Any:
    return load_hub_dataset(f"{files} for data.source 'commitpackft'", "it needs network access to the HF hub, or "
                            "data.path pointing at a local copy (a folder with commitpackft/ and guanaco-commits/)",
                            builder, data_files=files, split="train")


SOURCES.add("commitpackft", CommitPackFT())
