"""Small CodeXGLUE copies in the exact schema of the real files (Defect-detection: `function.json` +
`test.txt`; Clone-detection-BigCloneBench: `data.jsonl` + `test.txt`), for the loaders and the contracts."""

import json
import random
from pathlib import Path


def devign_folder(root: Path, negatives: int = 1200, positives: int = 1000) -> Path:
    """function.json (CodeXGLUE's fields) with a few rows outside the test split, and an unsorted test.txt."""
    folder = root / "devign"
    folder.mkdir()
    labels = [0] * negatives + [1] * positives
    random.Random(1).shuffle(labels)
    rows, test = [], []
    for n, label in enumerate(labels):
        rows.append({"project": "FFmpeg", "commit_id": f"{n:040x}", "target": label,
                     "func": f"static int f{n}(int x)\n{{\n    return x {'+' if label else '-'} {n};\n}}\n"})
        rows.append({"project": "qemu", "commit_id": f"{n:039x}f", "target": 0, "func": "void train_only(void) {}"})
        test.append(2 * n)
    random.Random(2).shuffle(test)  # CodeXGLUE's test.txt is not sorted
    (folder / "function.json").write_text(json.dumps(rows))
    (folder / "test.txt").write_text("\n".join(map(str, test)) + "\n")
    return folder


def bigclonebench_folder(root: Path, negatives: int = 1800, positives: int = 1100, functions: int = 60) -> Path:
    """data.jsonl (`{"func", "idx"}` per line) and test.txt (`idx1<TAB>idx2<TAB>label` per line)."""
    folder = root / "bigclonebench"
    folder.mkdir()
    ids = [str(10_000 + n) for n in range(functions)]
    (folder / "data.jsonl").write_text("".join(
        json.dumps({"func": f"public int m{i}(int x) {{ return x * {i}; }}", "idx": i}) + "\n" for i in ids))
    rng = random.Random(3)
    labels = [0] * negatives + [1] * positives
    rng.shuffle(labels)
    (folder / "test.txt").write_text("".join(f"{rng.choice(ids)}\t{rng.choice(ids)}\t{label}\n" for label in labels))
    return folder
