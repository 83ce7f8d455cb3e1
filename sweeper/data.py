"""Instruction data: sources of (instruction, response) examples -> OctoPack format -> packed sequences.

Every example is formatted as OctoPack / Astraios did: `Question: {instruction}\\n\\nAnswer: {response}`
followed by EOS, and the examples are concatenated and cut into sequences of `seq_len` tokens (the
last one padded, with no loss on the padding). The loss is on every token (`loss_on: all`, as
Astraios) or on the answer and its EOS only (`loss_on: answer`; labels are -100 elsewhere).

Sources (registry `SOURCES`):
- `local-code`: docstring -> function pairs mined with `ast` from the held-out files of the micro
  ladder's pretraining corpus (never pretrained on), or from the Python files under `path`.
- `git`: CommitPack-style pairs from the history of the git repository at `path`: commit message
  (with the old file, for a modified file) -> the new version of each changed text file.
- `commitpackft`: `bigcode/commitpackft` for `languages` and, with `with_oasst`, the OASST commits
  mix `bigcode/guanaco-commits` that Astraios trained on, through HF `datasets`.

Examples are deduplicated and split train / validation by the sha256 of their content, so the split
is deterministic and an example is never in both. The packed result is cached on disk (cells of a
grid share it, each in a fresh process), keyed by the config, the source's identity, the tokenizer
and the seed; its `fingerprint` (config + examples + tokenizer + seed) is recorded with every run.
"""

from __future__ import annotations

import ast
import hashlib
import random
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sweeper import provenance
from sweeper.errors import UserError, first_line
from sweeper.micro.cache import build_lock, commit_entry, digest, load_intact
from sweeper.micro.corpus import collect_corpus, hash_fraction, python_files
from sweeper.paths import cache_dir
from sweeper.registry import Registry
from sweeper.space import DataConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

# Bump when formatting, mining or packing changes, so that cached data is not reused.
DATA_FORMAT_VERSION = 1
IGNORE = -100  # label of tokens without loss (PyTorch cross-entropy's ignore_index)


@dataclass(frozen=True)
class Example:
    instruction: str
    response: str

    @property
    def key(self) -> str:
        """sha256 of the content: deduplication, the train/validation coin, the fingerprint."""
        return hashlib.sha256(f"{self.instruction}\x00{self.response}".encode()).hexdigest()


def format_prompt(instruction: str) -> str:
    """The OctoPack prompt; the answer follows after one space."""
    return f"Question: {instruction}\n\nAnswer:"


@dataclass(frozen=True)
class PackedData:
    """Packed token sequences, ready for the training loop ([rows, seq_len] int64 tensors)."""

    train_ids: torch.Tensor
    train_labels: torch.Tensor  # IGNORE (-100) where no loss
    val_ids: torch.Tensor  # at most `max_val_sequences` rows
    val_labels: torch.Tensor
    fingerprint: str
    n_examples: int
    n_train_examples: int
    n_val_examples: int


class Source(Protocol):
    def identity(self, config: DataConfig) -> dict[str, Any]:
        """What the examples are made from, cheaply (no mining): part of the cache key."""

    def examples(self, config: DataConfig) -> list[Example]: ...


SOURCES: Registry[Source] = Registry("data source")


def prepare_data(config: DataConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> PackedData:
    """The packed train and validation sequences for `config`, from the cache when possible
    (a cached call for the embedded default takes ~0.1 s)."""
    source = SOURCES.get(config.source)
    inputs = {
        "config": config.model_dump(mode="json"),
        "source": source.identity(config),
        "tokenizer": tokenizer_hash(tokenizer),
        "seed": seed,
        "format": DATA_FORMAT_VERSION,
    }
    entry = cache_dir() / "data" / f"{config.source}-{digest(inputs)[:16]}"
    with build_lock(entry):
        meta = load_intact(entry)
        if meta is None:
            meta = commit_entry(entry, lambda tmp: _build(config, source, tokenizer, seed, inputs, tmp))
    return _read(entry, meta)


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return digest({"vocabulary": vocabulary, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id})


def split_examples(examples: list[Example], config: DataConfig) -> tuple[list[Example], list[Example]]:
    """Deduplicate, cap at `max_examples` (the lowest hashes: a uniform, deterministic sample) and
    split by content hash. At least one example goes to each side when there are two or more."""
    unique = {example.key: example for example in examples}
    keys = sorted(unique)[: config.max_examples]
    if len(keys) < 2:
        raise UserError(
            f"data.source {config.source!r}: found {len(keys)} instruction example(s); at least 2 are "
            "needed (one to train on, one to validate)"
        )
    val = [k for k in keys if hash_fraction(k) < config.val_fraction] or keys[:1]
    train = [k for k in keys if k not in set(val)] or keys[-1:]
    val = [k for k in val if k not in set(train)]
    return [unique[k] for k in train], [unique[k] for k in val]


def pack(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, seq_len: int, loss_on: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Format, tokenize and concatenate the examples, cut into [rows, seq_len] (ids, labels).
    Prompt and answer are tokenized separately so that the answer boundary is exact; a byte-level
    BPE splits before the space anyway, so this is the same tokenization as of the whole text."""
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token; OctoPack examples end with one")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = tokenizer([format_prompt(e.instruction) for e in examples], add_special_tokens=False)["input_ids"]
    answers = tokenizer([f" {e.response}" for e in examples], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    labels: list[int] = []
    for prompt, answer in zip(prompts, answers, strict=True):
        ids += prompt + answer + [eos]
        labels += (prompt if loss_on == "all" else [IGNORE] * len(prompt)) + answer + [eos]
    padding = -len(ids) % seq_len
    ids += [pad] * padding
    labels += [IGNORE] * padding
    return torch.tensor(ids).view(-1, seq_len), torch.tensor(labels).view(-1, seq_len)


def _build(
    config: DataConfig, source: Source, tokenizer: PreTrainedTokenizerBase, seed: int,
    inputs: dict[str, Any], out: Path,
) -> dict[str, Any]:
    from safetensors.torch import save_file

    train, val = split_examples(source.examples(config), config)
    fingerprint = digest({
        "config": inputs["config"], "tokenizer": inputs["tokenizer"], "seed": seed,
        "format": DATA_FORMAT_VERSION, "train": [e.key for e in train], "val": [e.key for e in val],
    })
    random.Random(seed).shuffle(train)  # packing order; the training loop may shuffle rows again
    train_ids, train_labels = pack(train, tokenizer, config.seq_len, config.loss_on)
    val_ids, val_labels = pack(val, tokenizer, config.seq_len, config.loss_on)
    tensors = {
        "train_ids": train_ids, "train_labels": train_labels,
        "val_ids": val_ids[: config.max_val_sequences], "val_labels": val_labels[: config.max_val_sequences],
    }
    save_file(tensors, str(out / "packed.safetensors"))
    return {
        "kind": "instruction-data",
        "fingerprint": fingerprint,
        "inputs": inputs,
        "n_examples": len(train) + len(val),
        "n_train_examples": len(train),
        "n_val_examples": len(val),
        "train_sequences": len(train_ids),
        "val_sequences": len(tensors["val_ids"]),
        "provenance": provenance.collect(),
    }


def _read(entry: Path, meta: dict[str, Any]) -> PackedData:
    from safetensors.torch import load_file

    tensors = load_file(str(entry / "packed.safetensors"))
    return PackedData(
        **tensors,
        fingerprint=meta["fingerprint"],
        n_examples=meta["n_examples"],
        n_train_examples=meta["n_train_examples"],
        n_val_examples=meta["n_val_examples"],
    )


# ---- local-code: docstring -> function, mined with `ast` -------------------------------------

# A 256-token sequence holds ~900 characters of Python: longer functions would mostly teach the
# model to continue code that was cut off.
MAX_FUNCTION_CHARS = 1500
MIN_DOCSTRING_CHARS = 20  # shorter ones ("Return x.") say too little to be an instruction
MAX_DOCSTRING_CHARS = 1000


class LocalCode:
    """Docstring -> function pairs from the micro corpus's held-out files, or the files under `path`."""

    def _files(self, config: DataConfig) -> list[Path]:
        if config.path is None:
            from sweeper.micro.ladder import MICRO

            return [f.path for f in collect_corpus(MICRO.corpus).heldout_files]
        root = Path(config.path)
        if not root.is_dir():
            raise UserError(f"data.path {config.path!r}: not a folder (the local-code source mines its .py files)")
        return python_files(root, ("__pycache__",))

    def identity(self, config: DataConfig) -> dict[str, Any]:
        files = self._files(config)
        return {"files": sorted(hashlib.sha256(path.read_bytes()).hexdigest() for path in files)}

    def examples(self, config: DataConfig) -> list[Example]:
        found = []
        for path in self._files(config):
            try:
                found += mine_functions(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue  # not Python 3 this interpreter can parse: nothing to mine
        if not found:
            raise UserError(f"data.source 'local-code': no documented functions found in {config.path or 'the corpus'}")
        return found


def mine_functions(source: str) -> list[Example]:
    """Every documented function (and method) of a module: the instruction gives its signature and
    docstring, as HumanEvalSynthesize does; the response is its code without the docstring."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    examples = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
            continue
        docstring = ast.get_docstring(node)
        first = node.body[0]
        if not docstring or not MIN_DOCSTRING_CHARS <= len(docstring) <= MAX_DOCSTRING_CHARS:
            continue
        if first.lineno == node.lineno or first.end_lineno is None or node.end_lineno is None:
            continue  # docstring on the `def` line: cannot be cut out cleanly
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        code = textwrap.dedent("".join(lines[start : first.lineno - 1] + lines[first.end_lineno : node.end_lineno]))
        if len(code) > MAX_FUNCTION_CHARS:
            continue
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        signature = f"{node.name}({ast.unparse(node.args)}){returns}"
        instruction = f"Write a Python function `{signature}` to solve the following problem:\n{docstring}"
        examples.append(Example(instruction=instruction, response=code.rstrip() + "\n"))
    return examples


# ---- git: commit message -> new version of each changed file ----------------------------------

MAX_COMMITS = 5000  # most recent first: bounds the time on very long histories
MAX_FILE_BYTES = 3000  # old and new version each (see MAX_FUNCTION_CHARS)


class GitHistory:
    """CommitPack-style pairs mined from the history of a local git repository (files under `path`)."""

    def identity(self, config: DataConfig) -> dict[str, Any]:
        root = self._repo(config)
        return {"head": _git(root, "rev-parse", "HEAD").strip(), "prefix": _git(root, "rev-parse", "--show-prefix")}

    def _repo(self, config: DataConfig) -> Path:
        if config.path is None:
            raise UserError("data.path: the git source needs the path of a local git repository")
        root = Path(config.path).expanduser()
        if not root.is_dir():
            raise UserError(f"data.path {config.path!r}: not a folder (expected a local git repository)")
        try:
            _git(root, "rev-parse", "--git-dir")
        except UserError:
            raise UserError(f"data.path {config.path!r}: not a git repository") from None
        try:
            _git(root, "rev-parse", "--verify", "HEAD")
        except UserError:
            raise UserError(f"data.path {config.path!r}: the git repository has no commits") from None
        return root

    def examples(self, config: DataConfig) -> list[Example]:
        root = self._repo(config)
        changes = _changed_blobs(root)
        blobs = _read_blobs(root, {sha for change in changes for sha in change[1:3] if sha})
        examples = []
        for message, old_sha, new_sha in changes:
            new = blobs.get(new_sha)
            old = blobs.get(old_sha) if old_sha else ""
            if new is None or old is None or not message:
                continue  # binary or too large
            instruction = f"{old.rstrip()}\n\n{message}" if old else message
            examples.append(Example(instruction=instruction, response=new))
        if not examples:
            raise UserError(f"data.path {config.path!r}: no commit changes a text file of at most {MAX_FILE_BYTES} bytes")
        return examples


def _git(root: Path, *args: str, stdin: bytes | None = None) -> str:
    return _git_bytes(root, *args, stdin=stdin).decode("utf-8", errors="replace")


def _git_bytes(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True, timeout=300)
    except FileNotFoundError:
        raise UserError("the git source needs the `git` command, which is not installed") from None
    if done.returncode != 0:
        raise UserError(f"git {' '.join(args[:2])} in {root}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _changed_blobs(root: Path) -> list[tuple[str, str | None, str]]:
    """(message, old blob or None if added, new blob) for every file added or modified by the
    non-merge commits touching `root`, newest first. One `git log` for the whole history."""
    log = _git(root, "log", f"--max-count={MAX_COMMITS}", "--no-merges", "--no-renames", "--raw",
               "--no-abbrev", "--diff-filter=AM", "-z", "--format=%x1e%H%x00%B%x00", "--", ".")
    changes = []
    for record in log.split("\x1e")[1:]:
        parts = record.split("\x00", 2)
        if len(parts) < 3:
            continue
        _sha, message, raw = parts
        fields = raw.lstrip("\x00\n").split("\x00")
        for meta in fields[0::2]:
            if not meta.startswith(":"):
                continue
            _old_mode, _new_mode, old_sha, new_sha, status = meta[1:].split()
            changes.append((message.strip(), None if status == "A" else old_sha, new_sha))
    return changes


def _read_blobs(root: Path, shas: set[str]) -> dict[str, str]:
    """The text of every blob of at most MAX_FILE_BYTES that is UTF-8 without NUL bytes (submodule
    commits are not blobs of this repository: skipped)."""
    order = sorted(shas)
    checks = _git(root, "cat-file", "--batch-check", stdin="".join(f"{s}\n" for s in order).encode()).split("\n")
    small = []
    for sha, line in zip(order, checks, strict=False):
        fields = line.split()
        if len(fields) == 3 and fields[1] == "blob" and int(fields[2]) <= MAX_FILE_BYTES:
            small.append(sha)
    if not small:
        return {}
    data = _git_bytes(root, "cat-file", "--batch", stdin="".join(f"{s}\n" for s in small).encode())
    blobs, at = {}, 0
    for sha in small:
        header_end = data.index(b"\n", at)
        size = int(data[at:header_end].split()[2])
        content = data[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
        if b"\x00" not in content:
            try:
                blobs[sha] = content.decode("utf-8")
            except UnicodeDecodeError:
                continue
    return blobs


# ---- commitpackft (+ OASST): HF datasets -------------------------------------------------------

HUB_ROOT = "hf://datasets/bigcode"


class CommitPackFT:
    """`bigcode/commitpackft` (one jsonl per language) and `bigcode/guanaco-commits` (the CommitPackFT
    + OASST mix Astraios fine-tuned on, prompt/completion) loaded with HF `datasets`. With
    `path`, from a local folder holding `commitpackft/` and `guanaco-commits/` as on the hub
    (e.g. `hf download --repo-type dataset bigcode/commitpackft --local-dir PATH/commitpackft`)."""

    def _load(self, config: DataConfig) -> list[tuple[str, Any]]:
        root = str(Path(config.path).expanduser()) if config.path else HUB_ROOT
        parts = [("json", f"{root}/commitpackft/data/{language}/data.jsonl") for language in config.languages]
        if config.with_oasst:
            parts.append(("parquet", f"{root}/guanaco-commits/data/train-*.parquet"))
        return [(files, _load_dataset(builder, files)) for builder, files in parts]

    def identity(self, config: DataConfig) -> dict[str, Any]:
        return {files: dataset._fingerprint for files, dataset in self._load(config)}

    def examples(self, config: DataConfig) -> list[Example]:
        examples = []
        for _, dataset in self._load(config):
            if "prompt" in dataset.column_names:
                examples += [Example(row["prompt"], row["completion"]) for row in dataset]
                continue
            for row in dataset:
                message, old = row["message"].strip(), row["old_contents"]
                instruction = f"{old.rstrip()}\n\n{message}" if old.strip() else message
                examples.append(Example(instruction=instruction, response=row["new_contents"]))
        return examples


def _load_dataset(builder: str, files: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(builder, data_files=files, split="train")
    # Offline, datasets and huggingface_hub raise many types (ConnectionError, FileNotFoundError,
    # OfflineModeIsEnabled, HfHubHTTPError, ...): each means "cannot get the data" here.
    except Exception as err:
        raise UserError(
            f"data.source 'commitpackft': cannot load {files} ({first_line(err)}); it needs network access to the "
            "HF hub, or data.path pointing at a local copy (a folder with commitpackft/ and guanaco-commits/)"
        ) from None


SOURCES.add("local-code", LocalCode())
SOURCES.add("git", GitHistory())
SOURCES.add("commitpackft", CommitPackFT())
