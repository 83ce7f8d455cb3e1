"""The paper's code-comprehension benchmarks, from CodeXGLUE: defect detection (Devign) and clone
detection (BigCloneBench), as the Astraios scripts build, sample, parse and score them.

Protocol (bigcode-evaluation-harness, branch `astraios`: `instruct_codexglue_defect_detection.py`,
`instruct_codexglue_clone_detection.py`; Astraios `evaluation/eval_code_comprehension.ipynb`):
- prompt `Question: {code}\\nIs there a defect in the Code, ...\\n\\nAnswer:` (clone: `Code1: ... Code2: ...`),
  greedy, one answer, stop at the first newline, the prompt left-truncated to 512 tokens (the harness's
  `max_length_generation 512` with `truncation_side="left"`: a long function loses its beginning);
- the notebook's sample (`notebook_sample`: `random.seed(0)`, negatives then positives drawn by
  `random.sample`): Devign 1,081 negatives + 919 positives of the 2,732 test rows; BigCloneBench 1,726
  + 1,000 of the 415,416 test pairs for generation, then 1,726 + 274 of those 2,726 for scoring;
- the notebook's parser (`paper_parse`): the first sentence after the last `\\nAnswer:` says yes or no
  (substring tests, as the notebook has them), else a phrase of the task's lists decides, else the
  answer is invalid (-1);
- metrics: accuracy and macro-F1 over the labels present, so an invalid answer enters the macro average
  as a third class with F1 0 (the notebook's scikit-learn call); plus the valid share, and accuracy
  and binary F1 (positive = YES) on the valid answers. Fractions here; the paper prints x100.

Only the parsing and the sample decide a score from saved generations, so re-scoring the released
Astraios files reproduces the paper's numbers exactly (`sweeper eval score`). Data: a local CodeXGLUE
copy (`--data` DIR, as CodeXGLUE ships it), else the HF hub datasets the harness loads.
"""

from __future__ import annotations

import json
import math
import random
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sweeper.core.errors import UserError, first_line
from sweeper.core.hub import load_hub_dataset
from sweeper.evals.decoding import Decoding, sample
from sweeper.evals.lm import LanguageModel
from sweeper.evals.metrics import Metric
from sweeper.evals.tasks.base import TASKS, Context, Task, TaskResult

PROMPT_TOKENS = 512  # the harness's max_length_generation, the prompt cut from the left
ANSWER_TOKENS = 32  # enough for "Yes, there is a defect in the code." before the newline stop
STOP = ("\n",)
# Astraios evaluation/detect_detection.sh and clone_detection.sh: greedy, n=1, stop at the newline. The
# notebook's metrics take one answer per question: an n override is not taken.
DETECTION_DECODING = Decoding(n_samples=1, temperature=0.0, max_length=None, max_new_tokens=ANSWER_TOKENS, stop=STOP,
                              fixed_sampling=True, source="Astraios evaluation/{detect,clone}_detection.sh (greedy, n 1)")
ANSWER_MARK = "\nAnswer:"
INVALID = -1


@dataclass(frozen=True)
class Item:
    """One YES/NO question: its prompt, its label (1 = YES), and where it came from."""

    prompt: str
    label: int
    source_id: str  # the test row (Devign) or `id` (BigCloneBench) it was made from


def paper_parse(raw_text: str, yes_phrases: Sequence[str], no_phrases: Sequence[str]) -> int:
    """The notebook's `paper_method`: 1 (YES), 0 (NO) or -1 (neither)."""
    text = raw_text.split(ANSWER_MARK)[-1]
    short = text.lower().replace(",", ".").split(".")[0]
    if "yes" in short and "no" not in short:
        return 1
    if "no" in short and "yes" not in short:
        return 0
    if any(phrase in text for phrase in yes_phrases):
        return 1
    if any(phrase in text for phrase in no_phrases):
        return 0
    return INVALID


def notebook_sample(labels: Sequence[int], negatives: int, positives: int, seed: int = 0) -> list[int]:
    """The positions the notebook keeps: `random.seed(seed)`, then `random.sample` of the negatives' and
    then the positives' indices (each class in dataset order); negatives first, as it concatenates them."""
    rng = random.Random(seed)
    neg = [i for i, label in enumerate(labels) if label == 0]
    pos = [i for i, label in enumerate(labels) if label == 1]
    if len(neg) < negatives or len(pos) < positives:
        raise UserError(f"the sample needs {negatives} negatives and {positives} positives; the data has "
                        f"{len(neg)} and {len(pos)}")
    return [neg[i] for i in rng.sample(range(len(neg)), negatives)] + [pos[i] for i in rng.sample(range(len(pos)), positives)]


def detection_metrics(predictions: Sequence[int], labels: Sequence[int]) -> list[Metric]:
    """Accuracy and macro-F1 over every label present in either list (an invalid -1 answer is a class of its
    own, with F1 0), the valid share, and accuracy and binary F1 (positive = 1) on the valid answers."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError("predictions and labels must be non-empty and of equal length")
    pairs = list(zip(predictions, labels, strict=True))
    n = len(pairs)
    valid = [(p, y) for p, y in pairs if p != INVALID]
    macro = sum(_f1(pairs, c) for c in sorted({*predictions, *labels})) / len({*predictions, *labels})
    on_valid = (sum(p == y for p, y in valid) / len(valid), _f1(valid, 1)) if valid else (math.nan, math.nan)
    return [Metric("accuracy", sum(p == y for p, y in pairs) / n, n), Metric("macro_f1", macro, n),
            Metric("valid_rate", len(valid) / n, n), Metric("valid_accuracy", on_valid[0], len(valid)),
            Metric("valid_f1", on_valid[1], len(valid))]


def _f1(pairs: Sequence[tuple[int, int]], cls: int) -> float:
    tp = sum(p == cls and y == cls for p, y in pairs)
    wrong = sum((p == cls) != (y == cls) for p, y in pairs)  # false positives + false negatives
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


class CodeXGLUEDetection(Task):
    """Generate one greedy answer per sampled question, parse it as the notebook does, score the sample."""

    yes_phrases: ClassVar[tuple[str, ...]]
    no_phrases: ClassVar[tuple[str, ...]]
    scored_negatives: ClassVar[int]
    scored_positives: ClassVar[int]

    @abstractmethod
    def items(self, ctx: Context) -> list[Item]:
        """The questions scored, in the order the notebook's sample lists them (`ctx.limit`: the first N)."""

    decoding = DETECTION_DECODING

    def evaluate(self, lm: LanguageModel, ctx: Context) -> TaskResult:
        items = self.items(ctx)
        answers = sample(lm, [item.prompt for item in items], ctx.decoding(self.decoding), max_prompt_tokens=PROMPT_TOKENS)
        predictions = [self.parse(ANSWER_MARK + answer[0]) for answer in answers]
        return TaskResult(detection_metrics(predictions, [item.label for item in items]),
                          generations=[[answer[0]] for answer in answers], details=self.protocol())

    def parse(self, raw_text: str) -> int:
        return paper_parse(raw_text, self.yes_phrases, self.no_phrases)

    def protocol(self) -> dict[str, Any]:
        return {"prompt_tokens": PROMPT_TOKENS, "truncation": "left",
                "sample": f"{self.scored_negatives} negatives + {self.scored_positives} positives, seed 0"}

    def score(self, generations: list, ctx: Context) -> TaskResult:
        """Saved generations: the harness's file (one `[{ID, prediction, true_label, raw_text}]` per row it
        generated: every Devign test row, or BigCloneBench's 2,726 generated pairs; the labels come with it,
        and the notebook's sample is drawn from them), or sweeper's own (one `[answer]` per item of `items`,
        in that order)."""
        if generations and all(_harness_row(g) for g in generations):
            rows = sorted((g[0] for g in generations), key=lambda row: int(row["ID"]))
            labels = [int(row["true_label"]) for row in rows]
            kept = notebook_sample(labels, self.scored_negatives, self.scored_positives)
            predictions = [self.parse(rows[i]["raw_text"]) for i in kept]
            return TaskResult(detection_metrics(predictions, [labels[i] for i in kept]),
                              details={**self.protocol(), "generations": "harness (labels from the file)"})
        items = self.items(ctx)
        if len(generations) != len(items) or not all(
                isinstance(g, list) and len(g) == 1 and isinstance(g[0], str) for g in generations):
            raise UserError(f"{self.name}: expected the harness's generations (a [{{ID, prediction, true_label, "
                            f"raw_text}}] per test row) or one [answer] per question ({len(items)})")
        predictions = [self.parse(ANSWER_MARK + g[0]) for g in generations]
        return TaskResult(detection_metrics(predictions, [item.label for item in items]), details=self.protocol())


def _harness_row(entry: object) -> bool:
    return (isinstance(entry, list) and len(entry) == 1 and isinstance(entry[0], dict)
            and {"ID", "true_label", "raw_text"} <= set(entry[0]))


# -- Devign --------------------------------------------------------------------------------------------

DEVIGN_HUB = "google/code_x_glue_cc_defect_detection"


@TASKS.register("defect-detection")
class DefectDetection(CodeXGLUEDetection):
    name = "defect-detection"
    summary = ("Devign (CodeXGLUE) defect detection: YES/NO on 2,000 sampled C functions, the notebook's parser; "
               "accuracy, 3-class macro-F1, valid rate")
    yes_phrases = ("there is a", "ere is a", "has a defect", "contains a defect")
    no_phrases = ("there is no defect",)
    scored_negatives, scored_positives = 1081, 919

    def items(self, ctx: Context) -> list[Item]:
        functions, labels = load_devign(ctx.data)
        kept = notebook_sample(labels, self.scored_negatives, self.scored_positives)
        kept = kept[: ctx.limit] if ctx.limit else kept
        return [Item(devign_prompt(functions[i]), labels[i], str(i)) for i in kept]


def devign_prompt(function: str) -> str:
    return f"Question: {function}\nIs there a defect in the Code, and respond to YES or NO.\n\nAnswer:"


def load_devign(data: Path | None) -> tuple[list[str], list[int]]:
    """The Devign test split in its order (functions, labels): from a CodeXGLUE `dataset/` folder holding
    `function.json` and `test.txt` (the HF split is `function.json` filtered to the test indices, in file
    order), else from the HF hub."""
    if data is not None:
        functions_path, test_path = _codexglue_files(data, ("function.json", "test.txt"), "Defect-detection dataset "
                                                     "folder (function.json from its download link, and test.txt)")
        try:
            functions = json.loads(functions_path.read_text(encoding="utf-8"))
            indices = sorted(int(line) for line in test_path.read_text().split())
            rows = [functions[i] for i in indices]
            return [row["func"] for row in rows], [int(row["target"]) for row in rows]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise UserError(f"--data {data}: not CodeXGLUE's Defect-detection files ({first_line(err)})") from None
    rows = _hub_split(DEVIGN_HUB, "defect-detection")
    return [row["func"] for row in rows], [int(row["target"]) for row in rows]


# -- BigCloneBench ---------------------------------------------------------------------------------------

BCB_HUB = "google/code_x_glue_cc_clone_detection_big_clone_bench"
GENERATED_NEGATIVES, GENERATED_POSITIVES = 1726, 1000  # the harness's stage: the prompts generated


@TASKS.register("clone-detection")
class CloneDetection(CodeXGLUEDetection):
    name = "clone-detection"
    summary = ("BigCloneBench (CodeXGLUE) clone detection: YES/NO on 2,000 sampled Java function pairs, the "
               "notebook's parser; accuracy, 3-class macro-F1, valid rate")
    yes_phrases = ("there is a", "ere is a")
    no_phrases = ("there is no",)
    scored_negatives, scored_positives = 1726, 274

    def items(self, ctx: Context) -> list[Item]:
        pairs = load_bigclonebench(ctx.data)
        generated = [pairs[i] for i in notebook_sample([p[3] for p in pairs], GENERATED_NEGATIVES, GENERATED_POSITIVES)]
        kept = notebook_sample([p[3] for p in generated], self.scored_negatives, self.scored_positives)
        kept = kept[: ctx.limit] if ctx.limit else kept
        return [Item(clone_prompt(generated[i][1], generated[i][2]), generated[i][3], generated[i][0]) for i in kept]


def clone_prompt(first: str, second: str) -> str:
    return (f"Question: Code1: {first}.\nCode2: {second}.\nIs there a clone relation between the Code1 and Code2, "
            "and respond to YES or NO.\n\nAnswer:")


def load_bigclonebench(data: Path | None) -> list[tuple[str, str, str, int]]:
    """The BigCloneBench test pairs in `test.txt` order, as (id, func1, func2, label): from a CodeXGLUE
    `dataset/` folder (`data.jsonl`: one `{"func", "idx"}` per line; `test.txt`: `idx1<TAB>idx2<TAB>label`),
    else from the HF hub."""
    if data is not None:
        functions_path, test_path = _codexglue_files(data, ("data.jsonl", "test.txt"), "Clone-detection-BigCloneBench "
                                                     "dataset folder (data.jsonl and test.txt)")
        try:
            functions = {}
            for line in functions_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    functions[str(row["idx"])] = row["func"]
            pairs = []
            for n, line in enumerate(test_path.read_text().splitlines()):
                if line.strip():
                    first, second, label = line.split("\t")
                    pairs.append((str(n), functions[first], functions[second], int(label)))
            return pairs
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"--data {data}: not CodeXGLUE's BigCloneBench files ({first_line(err)})") from None
    rows = _hub_split(BCB_HUB, "clone-detection")
    return [(str(row["id"]), row["func1"], row["func2"], int(row["label"])) for row in rows]


def _codexglue_files(data: Path, names: tuple[str, ...], expected: str) -> list[Path]:
    """The named files of a local CodeXGLUE `dataset/` folder; a missing one is a one-line error."""
    paths = [Path(data) / name for name in names]
    for path in paths:
        if not path.is_file():
            raise UserError(f"--data {data}: no {path.name}; expected CodeXGLUE's {expected}")
    return paths


def _hub_split(dataset: str, task: str) -> list[dict[str, Any]]:
    return list(load_hub_dataset(f"{dataset} from the HF hub for {task}", "give a local CodeXGLUE copy with --data DIR",
                                 dataset, split="test"))
