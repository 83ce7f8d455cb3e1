"""Devign and BigCloneBench as the paper scores them: the notebook's parser and sample, the metrics, the
loaders on copies in CodeXGLUE's schema, and the released Astraios defect-detection scores reproduced."""

import gzip
import json
from pathlib import Path

import pytest
from codexglue_data import bigclonebench_folder, devign_folder

from sweeper.core.errors import UserError
from sweeper.evals.tasks.base import Context
from sweeper.evals.tasks.codexglue import (
    PROMPT_TOKENS,
    CloneDetection,
    DefectDetection,
    detection_metrics,
    notebook_sample,
    paper_parse,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DEFECT_FILES = sorted((SHARED / "astraios" / "defect_detection").glob("*.json.gz"))
needs_shared = pytest.mark.skipif(not DEFECT_FILES, reason="the shared Astraios defect-detection files are absent")

# accuracy / macro-F1 (%) of ../shared/data/README.md, zero-shot table (exact: pure string processing)
REFERENCE = {
    "1b-fft": (50.80, 33.40), "1b-lora": (44.15, 21.49), "1b-ptuning": (53.70, 25.66), "1b-ia3": (53.90, 28.92),
    "1b-adapterh": (45.75, 20.99), "1b-parallel": (34.50, 22.32), "3b-fft": (44.20, 23.77),
    "7b-parallel": (52.55, 34.81),
}


def _load(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]


def test_the_parser_follows_the_notebook():
    yes, no = DefectDetection.yes_phrases, DefectDetection.no_phrases
    assert paper_parse("Question: code\n\nAnswer: Yes, it does.", yes, no) == 1
    assert paper_parse("Question: code\n\nAnswer: No.", yes, no) == 0
    assert paper_parse("Answer: yes and no", yes, no) == -1  # both words in the first sentence, no phrase
    assert paper_parse("Answer: I think there is a defect", yes, no) == 1  # no yes/no: the phrase decides
    assert paper_parse("Answer: I think there is no defect", yes, no) == 0
    assert paper_parse("Answer: The function returns 0", yes, no) == -1
    # Substrings, as the notebook tests them: "none" holds "no".
    assert paper_parse("Answer: none", yes, no) == 0
    # Only the text after the last "\nAnswer:" counts (a function may contain the word).
    assert paper_parse("Question: f(yes)\n\nAnswer: no", yes, no) == 0


@needs_shared
def test_the_parser_agrees_with_the_harness_on_every_released_answer():
    disagree = [(path.name, row[0]["ID"]) for path in DEFECT_FILES for row in _load(path)
                if DefectDetection().parse(row[0]["raw_text"]) != int(row[0]["prediction"])]
    assert disagree == []


@pytest.mark.skipif(not (SHARED / "devign" / "test_labels.jsonl.gz").is_file(), reason="shared Devign labels absent")
def test_the_sample_is_the_notebooks():
    labels = [row["target"] for row in sorted(_rows(SHARED / "devign" / "test_labels.jsonl.gz"),
                                              key=lambda row: row["test_row"])]
    kept = notebook_sample(labels, 1081, 919)
    expected = {row["test_row"] for row in _rows(SHARED / "devign" / "astraios_sample_2000.jsonl.gz")}
    assert len(kept) == 2000 and set(kept) == expected
    assert sum(labels[i] for i in kept) == 919


def test_macro_f1_counts_an_invalid_answer_as_a_class_of_its_own():
    metrics = {m.name: m for m in detection_metrics([1, 0, -1, 1], [1, 0, 1, 0])}
    assert metrics["accuracy"].value == 0.5
    # classes -1, 0, 1: F1 0, 2/3 and 1/2 -> 7/18 (scikit-learn's macro average over the labels present)
    assert metrics["macro_f1"].value == pytest.approx(7 / 18)
    assert metrics["valid_rate"].value == 0.75 and metrics["valid_accuracy"].value == pytest.approx(2 / 3)
    assert metrics["valid_f1"].value == pytest.approx(2 / 3)
    two_class = {m.name: m.value for m in detection_metrics([1, 0], [1, 1])}
    assert two_class["macro_f1"] == pytest.approx((0 + 2 / 3) / 2)


@needs_shared
@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_rescoring_the_released_generations_gives_the_papers_numbers(model):
    from sweeper.evals.evaluate import score_generations

    [path] = [p for p in DEFECT_FILES if f"starcoderbase-{model}.json" in p.name]
    report = score_generations("defect-detection", path)
    values = {m["metric"]: m["value"] for m in report["metrics"]}
    assert (round(100 * values["accuracy"], 2), round(100 * values["macro_f1"], 2)) == REFERENCE[model]
    assert {m["metric"]: m["n"] for m in report["metrics"]}["accuracy"] == 2000
    assert report["settings"]["generations"] == str(path)


def test_devign_loader_reads_codexglues_files_in_test_order(tmp_path):
    folder = devign_folder(tmp_path)
    ctx = Context(sandbox=None, data=folder)
    items = DefectDetection().items(ctx)
    assert len(items) == 2000 and sum(item.label for item in items) == 919
    functions = json.loads((folder / "function.json").read_text())
    test_rows = sorted(int(line) for line in (folder / "test.txt").read_text().split())
    first = functions[test_rows[int(items[0].source_id)]]
    assert items[0].prompt == (f"Question: {first['func']}\nIs there a defect in the Code, and respond to YES or NO."
                               "\n\nAnswer:") and items[0].label == first["target"]
    assert len(DefectDetection().items(Context(sandbox=None, data=folder, limit=3))) == 3
    (folder / "test.txt").unlink()
    with pytest.raises(UserError, match=r"test\.txt"):
        DefectDetection().items(ctx)


def test_bigclonebench_loader_samples_twice_as_the_harness_and_the_notebook(tmp_path):
    items = CloneDetection().items(Context(sandbox=None, data=bigclonebench_folder(tmp_path)))
    assert len(items) == 2000 and sum(item.label for item in items) == 274  # 1,726 negatives kept, 274 positives
    assert items[0].prompt.startswith("Question: Code1: public int m") and "\nCode2: public int m" in items[0].prompt
    assert items[0].prompt.endswith("respond to YES or NO.\n\nAnswer:")


class Answers:
    """A stand-in model: answers YES to every question, and records what it was asked."""

    def __init__(self, answer: str):
        self.answer, self.kwargs = answer, {}

    def generate(self, prompts, *, n, temperature, max_new_tokens, stop, max_prompt_tokens=None):
        self.kwargs = {"n": n, "temperature": temperature, "stop": stop, "max_prompt_tokens": max_prompt_tokens}
        return [[self.answer] * n for _ in prompts]

    def loglikelihood(self, requests):
        raise AssertionError("a generative task")


def test_evaluation_is_greedy_left_truncated_and_rescored_the_same(tmp_path):
    ctx = Context(sandbox=None, data=devign_folder(tmp_path), limit=10, n_samples=20, temperature=0.2)
    model = Answers(" Yes, there is a defect.")
    task = DefectDetection()
    result = task.evaluate(model, ctx)
    assert model.kwargs == {"n": 1, "temperature": 0.0, "stop": ("\n",), "max_prompt_tokens": PROMPT_TOKENS}
    values = {m.name: m.value for m in result.metrics}
    labels = [item.label for item in task.items(ctx)]
    assert values["accuracy"] == sum(labels) / len(labels) and values["valid_rate"] == 1.0
    again = task.score(result.generations, ctx)
    assert [(m.name, m.value) for m in again.metrics] == [(m.name, m.value) for m in result.metrics]
    with pytest.raises(UserError, match="defect-detection"):
        task.score([["Yes"]] * 3, ctx)
