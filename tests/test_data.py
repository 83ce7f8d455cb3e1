"""Instruction data: OctoPack format, packing, label masking, split, fingerprint, cache, sources."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from repos import git, new_repo

from sweeper.core.errors import UserError
from sweeper.core.paths import cache_dir
from sweeper.data import (
    IGNORE,
    SOURCES,
    Example,
    HashSplitSource,
    octopack_prompt,
    pack,
    prepare_data,
    split_examples,
)
from sweeper.data.commitpackft import CommitPackFT
from sweeper.data.git import GitHistory
from sweeper.data.local_code import LocalCode, mine_functions
from sweeper.ladders.micro.config import TokenizerConfig
from sweeper.ladders.micro.corpus import collect_corpus
from sweeper.ladders.micro.ladder import MICRO
from sweeper.ladders.micro.tokenizer import as_transformers, train_tokenizer
from sweeper.schema import DataConfig
from sweeper.space import load_space

EXAMPLES = [
    Example("Add two numbers.", "def add(a, b):\n    return a + b\n"),
    Example("Reverse a string.", "def rev(s):\n    return s[::-1]\n"),
    Example("Return the maximum of a list.", "def biggest(xs):\n    return max(xs)\n"),
    Example("Count the words in a text.", "def words(text):\n    return len(text.split())\n"),
]


@pytest.fixture(scope="module")
def tokenizer():
    """A small BPE trained on a few standard library files (milliseconds, no ladder needed)."""
    files = collect_corpus(MICRO.corpus).train_files[:30]
    return as_transformers(train_tokenizer([f.read() for f in files], TokenizerConfig(vocab_size=512)))


@pytest.fixture
def cache() -> Path:
    return cache_dir()  # conftest gives every test its own


def test_octopack_format_and_packing(tokenizer):
    ids, labels = pack(EXAMPLES, tokenizer, seq_len=32, loss_on="all")
    assert ids.shape[1] == 32 and ids.shape == labels.shape and ids.dtype == torch.long
    text = tokenizer.decode(ids.flatten())
    expected = "".join(
        f"Question: {e.instruction}\n\nAnswer: {e.response}{tokenizer.eos_token}" for e in EXAMPLES
    )
    assert text.startswith(expected)
    # The last row is padded; padding has no loss and nothing but padding follows the last EOS.
    n_real = len(tokenizer(expected, add_special_tokens=False)["input_ids"])
    assert (labels.flatten()[n_real:] == IGNORE).all()
    assert ids.numel() - n_real < 32
    assert octopack_prompt("x") == "Question: x\n\nAnswer:"


def test_loss_on_all_versus_answer(tokenizer):
    ids_all, labels_all = pack(EXAMPLES, tokenizer, seq_len=16, loss_on="all")
    ids_ans, labels_ans = pack(EXAMPLES, tokenizer, seq_len=16, loss_on="answer")
    assert torch.equal(ids_all, ids_ans)  # the switch changes labels only
    real = labels_all != IGNORE
    assert torch.equal(labels_all[real], ids_all[real])
    # Answer mode: exactly the answers and their EOS carry a loss.
    kept = tokenizer.decode(labels_ans[labels_ans != IGNORE])
    assert kept == "".join(f" {e.response}{tokenizer.eos_token}" for e in EXAMPLES)
    assert "Question" not in kept and "Answer:" not in kept


def test_split_is_deterministic_disjoint_and_deduplicated():
    examples = [Example(f"task {i}", f"answer {i}") for i in range(400)]
    config = DataConfig(val_fraction=0.1)
    train, val = split_examples(examples + examples[:50], config)
    train2, val2 = split_examples(list(reversed(examples)), config)
    assert [e.key for e in train] == [e.key for e in train2] and val == val2
    assert not {e.key for e in train} & {e.key for e in val}
    assert len(train) + len(val) == 400
    assert 20 <= len(val) <= 60  # ~10% of 400
    capped_train, capped_val = split_examples(examples, DataConfig(max_examples=100))
    assert len(capped_train) + len(capped_val) == 100
    with pytest.raises(UserError, match="at least 2"):
        split_examples(examples[:1], config)


def test_fingerprint_and_cache(tokenizer, cache, monkeypatch):
    mined = {"n": 0}

    class Fixed(HashSplitSource):
        def identity(self, config, files):
            return {"examples": "fixed"}

        def examples(self, config, files):
            mined["n"] += 1
            return [Example(f"Task number {i}.", f"print({i})\n") for i in range(60)]

    monkeypatch.setitem(SOURCES._entries, "fixed", Fixed())
    config = DataConfig(source="fixed", seq_len=64, val_fraction=0.2, max_val_sequences=2)
    first = prepare_data(config, tokenizer)
    again = prepare_data(config, tokenizer)
    assert mined["n"] == 1  # the second call came from the cache
    assert again.fingerprint == first.fingerprint and torch.equal(again.train_ids, first.train_ids)
    assert first.n_examples == 60 == first.n_train_examples + first.n_val_examples
    assert first.val_ids.shape[0] <= 2 and first.train_ids.shape[1] == 64

    fingerprints = {first.fingerprint}
    for changed in (config.model_copy(update={"seq_len": 32}), config.model_copy(update={"loss_on": "answer"}),
                    config.model_copy(update={"val_fraction": 0.3})):
        fingerprints.add(prepare_data(changed, tokenizer).fingerprint)
    fingerprints.add(prepare_data(config, tokenizer, seed=1).fingerprint)
    assert len(fingerprints) == 5

    # A damaged cache file is detected by its hash and rebuilt, not used.
    (packed,) = [
        entry / "packed.safetensors" for entry in cache.glob("data/fixed-*")
        if json.loads((entry / "meta.json").read_text())["fingerprint"] == first.fingerprint
    ]
    damaged = bytearray(packed.read_bytes())
    damaged[-1] ^= 0xFF
    packed.write_bytes(bytes(damaged))
    rebuilt = prepare_data(config, tokenizer)
    assert mined["n"] == 6 and torch.equal(rebuilt.train_ids, first.train_ids)


def test_mine_functions_strips_the_docstring():
    source = '''
class Box:
    @staticmethod
    def area(width: float, height: float) -> float:
        """Return the area of a width x height rectangle."""
        return width * height

def tiny():
    """Too short."""
    return 1
'''
    (example,) = mine_functions(source)
    assert example.instruction.startswith(
        "Write a Python function `area(width: float, height: float) -> float` to solve the following problem:\n"
    )
    assert example.instruction.endswith("Return the area of a width x height rectangle.")
    assert example.response == "@staticmethod\ndef area(width: float, height: float) -> float:\n    return width * height\n"


def test_local_code_mines_only_heldout_files(tokenizer, cache):
    corpus = collect_corpus(MICRO.corpus)
    files = MICRO.instruction_files()  # the ladder hands the source its held-out code; the source knows no ladder
    assert LocalCode()._files(DataConfig(), files) == files
    with pytest.raises(UserError, match=r"data\.path"):
        LocalCode()._files(DataConfig(), None)  # a ladder without code of its own: a folder must be given
    assert set(files) == {f.path for f in corpus.heldout_files}
    assert not set(files) & {f.path for f in corpus.train_files}
    data = prepare_data(DataConfig(max_examples=80), tokenizer, files=MICRO.instruction_files())
    assert data.n_examples == 80 and data.train_ids.shape[1] == 256


def test_local_code_mines_installed_packages_without_their_tests(tmp_path, monkeypatch):
    documented = 'def {name}(x):\n    """Return x twice, for the test of mining packages."""\n    return 2 * x\n'
    (tmp_path / "mylib" / "tests").mkdir(parents=True)
    (tmp_path / "mylib" / "__init__.py").write_text(documented.format(name="double"))
    (tmp_path / "mylib" / "tests" / "test_double.py").write_text(documented.format(name="check"))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = DataConfig(packages=("mylib",))
    (example,) = LocalCode().examples(config, None)
    assert "`double(x)`" in example.instruction
    assert not LocalCode().needs_files(config)
    assert LocalCode().identity(config, None)["packages"] == {"mylib": None}  # no distribution provides it
    for missing in ("no_such_package", "no_such_package.sub", ""):
        with pytest.raises(UserError, match=rf"data\.packages: '{missing}' is not an installed package"):
            LocalCode().examples(DataConfig(packages=(missing,)), None)
    with pytest.raises(UserError, match=r"data\.packages and data\.path"):
        LocalCode().examples(DataConfig(packages=("mylib",), path=str(tmp_path)), None)


def test_the_micro_space_fine_tunes_on_code_it_never_pretrained_on():
    data = load_space("micro", []).data
    assert data.source == "local-code" and data.packages
    mined = {hashlib.sha256(path.read_bytes()).hexdigest() for path in LocalCode()._files(data, None)
             if path.stat().st_size}  # an empty __init__.py is every library's
    pretrained = {file.sha256 for file in collect_corpus(MICRO.corpus).files}
    assert mined and not mined & pretrained


def test_git_source_on_a_temporary_repository(tmp_path):
    repo = new_repo(tmp_path / "repo")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "logo.bin").write_bytes(b"\x00\x01\x02binary")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Add an adder")
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    git(repo, "commit", "-q", "-am", "Add subtraction\n\nAlso keep add.")
    (repo / "huge.py").write_text("x = 1\n" * 2000)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Add a file too large to be an example")

    examples = GitHistory().examples(DataConfig(source="git", path=str(repo)))
    by_response = {e.response: e for e in examples}
    assert len(examples) == 2  # the binary and the oversized file are skipped
    added = by_response["def add(a, b):\n    return a + b\n"]
    assert added.instruction == "Add an adder"
    changed = by_response["def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"]
    assert changed.instruction == "def add(a, b):\n    return a + b\n\nAdd subtraction\n\nAlso keep add."
    identity = GitHistory().identity(DataConfig(source="git", path=str(repo)))
    (repo / "calc.py").write_text("changed\n")
    git(repo, "commit", "-q", "-am", "Change")
    assert GitHistory().identity(DataConfig(source="git", path=str(repo))) != identity


def test_git_source_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UserError, match="has no commits"):
        GitHistory().examples(DataConfig(source="git", path=str(empty)))
    with pytest.raises(UserError, match="not a git repository"):
        GitHistory().identity(DataConfig(source="git", path=str(plain)))
    with pytest.raises(UserError, match="not a folder"):
        GitHistory().identity(DataConfig(source="git", path=str(tmp_path / "missing")))
    with pytest.raises(UserError, match="needs the path"):
        GitHistory().identity(DataConfig(source="git"))


def test_commitpackft_offline_is_a_clear_error(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        CommitPackFT().examples(DataConfig(source="commitpackft"))
    message = str(err.value)
    assert "commitpackft" in message and "network access" in message and "data.path" in message
    assert "\n" not in message


def write_oasst(copy, conversations, lang="en"):
    """A local copy of bigcode/oasst-octopack: one conversation per line, as released."""
    folder = copy / "oasst-octopack"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"conversations": [{"text": text, "role": role} for role, text in messages], "lang": lang}
            for messages in conversations]
    (folder / "oasst_octopack.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_oasst_keeps_each_conversations_first_question_and_answer(monkeypatch, tmp_path):
    """OctoPack's rule (octopack README): the first two messages of each tree are the question and the
    answer; later turns are dropped, and a tree without an answer gives no example."""
    import datasets

    from sweeper.data.oasst import OasstOctopack

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    write_oasst(tmp_path / "copy", [
        [("user", "What is a monad?"), ("assistant", "A monoid in endofunctors."), ("user", "Simpler?"),
         ("assistant", "A wrapper with bind.")],
        [("user", "¿Qué es una escala de blues?"), ("assistant", "Una escala pentatónica.")],
        [("user", "Unanswered question")],
    ])
    examples = OasstOctopack().examples(DataConfig(source="oasst", path=str(tmp_path / "copy")))
    assert examples == [Example("What is a monad?", "A monoid in endofunctors."),
                        Example("¿Qué es una escala de blues?", "Una escala pentatónica.")]


def test_oasst_without_its_columns_is_a_clear_error(monkeypatch, tmp_path):
    import datasets

    from sweeper.data.oasst import OasstOctopack

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    folder = tmp_path / "copy" / "oasst-octopack"
    folder.mkdir(parents=True)
    (folder / "oasst_octopack.jsonl").write_text(json.dumps({"prompt": "Say hi", "completion": "hi"}) + "\n")
    with pytest.raises(UserError, match=r"no column 'conversations'.*oasst-octopack"):
        OasstOctopack().examples(DataConfig(source="oasst", path=str(tmp_path / "copy")))


def test_commitpackft_from_a_local_copy(monkeypatch, tmp_path):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    python = tmp_path / "copy" / "commitpackft" / "data" / "python"
    python.mkdir(parents=True)
    rows = [
        {"old_contents": "x = 1\n", "new_contents": "x = 2\n", "message": "Set x to two", "subject": "Set x"},
        {"old_contents": "", "new_contents": "print(1)\n", "message": "Print one", "subject": "Print one"},
    ]
    (python / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_oasst(tmp_path / "copy", [[("user", "Say hi"), ("assistant", "hi")]])

    examples = CommitPackFT().examples(DataConfig(source="commitpackft", path=str(tmp_path / "copy")))
    assert set(examples) == {
        Example("Set x\nx = 1\n", "x = 2\n"), Example("Print one", "print(1)\n"), Example("Say hi", "hi"),
    }
    without = CommitPackFT().examples(
        DataConfig(source="commitpackft", path=str(tmp_path / "copy"), with_oasst=False)
    )
    assert len(without) == 2


def test_the_astraios_space_trains_on_guanaco_commits_as_released(tmp_path, monkeypatch):
    """12,958 rows to train on and the whole 629-row test split to validate on, from a copy in the hub's
    layout and schema (the loader reads the hub itself on a cluster)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeper.space import load_space

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    folder = tmp_path / "copy" / "guanaco-commits" / "data"
    folder.mkdir(parents=True)
    for split, rows in (("train", 12_958), ("test", 629)):
        table = pa.table({"prompt": [f"{split} question {n}" for n in range(rows)],
                          "completion": [f"answer {n}" for n in range(rows)]})
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet")
    space = load_space("astraios", [f"data.path={tmp_path / 'copy'}"])
    assert space.data.source == "guanaco-commits"
    train, val = SOURCES.get("guanaco-commits").splits(space.data, None)
    assert (len(train), len(val)) == (12_958, 629)
    assert train[0] == Example("train question 0", "answer 0") and val[-1] == Example("test question 628", "answer 628")
    assert SOURCES.get("guanaco-commits").drop_tail


def test_packing_drops_the_partial_tail_when_the_source_says_so(tokenizer):
    ids, _ = pack(EXAMPLES, tokenizer, seq_len=16, loss_on="all")
    dropped, dropped_labels = pack(EXAMPLES, tokenizer, seq_len=16, loss_on="all", drop_tail=True)
    assert dropped.shape[0] == ids.shape[0] - 1 and (dropped == ids[:-1]).all()
    assert (dropped_labels != IGNORE).all()  # no padding left
    one, _ = pack(EXAMPLES[:1], tokenizer, seq_len=4096, loss_on="all", drop_tail=True)
    assert one.shape == (1, 4096)  # shorter than one sequence: kept, padded
