"""The `guanaco-commits` source: the data Astraios fine-tuned on, as OctoPack released it.

`bigcode/guanaco-commits` (CommitPackFT + OASST, prompt/completion pairs): its `train` split (12,958
rows) is trained on and its whole `test` split (629 rows) is the validation set, as the Astraios
`finetune.py` uses them; nothing is re-split or deduplicated. Each pair is formatted OctoPack's way
(`octopack_prompt`) and the examples are packed into sequences with the last, partial one dropped
(finetune.py's ConstantLengthDataset). With `data.path`, from a local folder holding
`guanaco-commits/data/{train,test}-*.parquet` as on the hub; else from the hub itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.core.errors import UserError
from sweeper.core.hub import load_hub_dataset
from sweeper.data.base import SOURCES, Example, hub_root
from sweeper.schema import DataConfig

SPLITS = ("train", "test")


class GuanacoCommits:
    drop_tail = True

    def needs_files(self, config: DataConfig) -> bool:
        return False

    def _load(self, config: DataConfig) -> dict[str, Any]:
        root = hub_root(config)
        return {split: _load_split(f"{root}/guanaco-commits/data/{split}-*.parquet") for split in SPLITS}

    def identity(self, config: DataConfig, files: list[Path] | None = None) -> dict[str, Any]:
        return {split: dataset._fingerprint for split, dataset in self._load(config).items()}

    def splits(self, config: DataConfig, files: list[Path] | None = None) -> tuple[list[Example], list[Example]]:
        """(train, test) as released; `max_examples` caps the training examples (the first ones)."""
        loaded = self._load(config)
        train, test = ([Example(row["prompt"], row["completion"]) for row in loaded[split]] for split in SPLITS)
        if not train or not test:
            raise UserError(f"data.source 'guanaco-commits': the train split has {len(train)} rows and the test "
                            f"split {len(test)}; both are needed")
        return train[: config.max_examples], test


def _load_split(files: str) -> Any:
    dataset = load_hub_dataset(
        f"{files} for data.source 'guanaco-commits'", "it needs network access to the HF hub, or data.path "
        "pointing at a local copy (a folder holding guanaco-commits/data/)", "parquet", data_files=files, split="train")
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise UserError(f"data.source 'guanaco-commits': {files} has no column(s) {', '.join(sorted(missing))}; "
                        "expected bigcode/guanaco-commits' prompt and completion")
    return dataset


SOURCES.add("guanaco-commits", GuanacoCommits())
