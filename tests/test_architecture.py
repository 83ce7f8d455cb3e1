"""The layout's rules, checked on the source and on a built wheel.

- no import circle among the project's modules (sweeper/**, analysis/**);
- only sweeper/backend/ imports Ray;
- `sweeper status`, `sweeper plan --help` and `sweeper fit` on a CSV load neither Ray nor torch;
- every package of the tree is listed in pyproject.toml (and every package listed exists);
- a built wheel, installed in a fresh venv, runs `sweeper plan --space micro` from its own copy;
- no block of six lines of code stands twice in the tree (sweeper, analysis, benchmarks, tests).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_PACKAGES = ("sweeper", "analysis")
BACKEND = ROOT / "sweeper" / "backend"
HEAVY = ("ray", "torch")


# ---------------------------------------------------------------------------------------------------
# The project's modules and their imports, from the source (nothing is imported).


def _source_files() -> list[Path]:
    files = []
    for top in TOP_PACKAGES:
        files += [p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _python_folders() -> list[Path]:
    """Folders under sweeper/ and analysis/ that hold Python files (Python imports each as a package,
    a regular one with __init__.py or an implicit namespace one without)."""
    return sorted({p.parent for p in _source_files()})


def _modules() -> set[str]:
    """Every importable name of the tree: its modules and its packages (namespace ones included)."""
    names = {_module_name(p) for p in _source_files()}
    names |= {".".join(d.relative_to(ROOT).parts) for d in _python_folders()}
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, skip_type_checking: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth (functions, classes, try blocks...); with
    `skip_type_checking`, not those in the body of an `if TYPE_CHECKING:` (its `else:` still counts)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            elif skip_type_checking and isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_one(stmt)
            else:
                visit(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        else:
            visit(node)

    visit(tree)
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of a `from X import ...` (resolving `from . import` / `from ..a import`)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The project modules an import statement names (outside modules are dropped)."""
    if isinstance(node, ast.Import):
        named = []
        for alias in node.names:
            # `import a.b.c` where c is not a module (cannot happen for a valid import, but cheap):
            # the longest prefix that is one.
            parts = alias.name.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts:
                named.append(".".join(parts))
        return named
    source = _absolute(node, module, is_package)
    named = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if alias.name != "*" and sub in known:  # `from pkg import name`: pkg/name.py or pkg/name/ exists
            named.append(sub)
        elif source in known:  # a name defined in pkg (or `*`)
            named.append(source)
    return named


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """module -> the project modules it imports (module level and function-local, not TYPE_CHECKING),
    and for each edge the first file:line that makes it.

    Only the module named is an edge: importing `a.b.c` also runs the `__init__` of `a.b` and `a`, but
    those are not added as edges (a package's `__init__` importing its own submodules would otherwise
    make every `from a.b import c` a circle through `a`). A module importing names from itself
    (`from . import x` in a package whose `x` is no submodule) is no edge either."""
    known = _modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    where: dict[tuple[str, str], str] = {}
    for path in _source_files():
        module = _module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree, skip_type_checking=True):
            for target in _targets(node, module, path.name == "__init__.py", known):
                if target != module:
                    graph[module].add(target)
                    where.setdefault((module, target), f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph, where


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Circles of a directed graph, one per back edge a depth-first search meets: [a, b, a]."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            state = color.get(nxt, WHITE)
            if state == GREY:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif state == WHITE:
                visit(nxt)
        stack.pop()
        color[node] = BLACK

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if color[node] == WHITE:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def test_find_cycles_finds_a_circle():
    """The detector itself: a circle is found (and printed in order), a tree is not one."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle():
    graph, where = import_graph()
    # Not vacuous: the tree has its ~100 modules and the CLI reaches its command modules.
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100, "the import graph looks empty"
    assert "sweeper.cli.status" in graph["sweeper.cli.main"]
    assert "sweeper.space" in graph["sweeper.cli.plan"]  # a function-local import counts
    cycles = find_cycles(graph)
    lines = []
    for cycle in cycles:
        edges = ", ".join(where[(a, b)] for a, b in itertools.pairwise(cycle))
        lines.append(f"{' -> '.join(cycle)}   ({edges})")
    assert not cycles, f"{len(cycles)} import cycle(s), the first ones:\n" + "\n".join(lines[:20])


def test_only_backend_imports_ray():
    offenders = []
    for path in _source_files():
        if path.is_relative_to(BACKEND):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree, skip_type_checking=False):  # TYPE_CHECKING imports count too
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = [node.module or ""] if node.level == 0 else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
        # `importlib.import_module("ray...")` / `__import__("ray...")` are imports of Ray as well.
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and re.fullmatch(r"ray(\..*)?", node.args[0].value)
                    and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "Ray imported outside sweeper/backend/:\n" + "\n".join(offenders)


# ---------------------------------------------------------------------------------------------------
# Light commands load neither Ray nor torch.

_MARK = "@@ARCH@@"

# Runs in a fresh interpreter: records, for ray and torch, the stack of the first attempts to import
# them (a meta-path hook that finds nothing itself), runs the command, then prints what sys.modules holds.
_PROBE = textwrap.dedent("""
    import json, sys, traceback

    class Spy:
        chains = {}
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in HEAVY and top not in self.chains:
                frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
                self.chains[top] = [f"{f.filename}:{f.lineno}: {f.line}" for f in frames]
            return None

    HEAVY = %(heavy)r
    spy = Spy()
    sys.meta_path.insert(0, spy)

    from sweeper.cli.main import app
    try:
        app(%(args)r, standalone_mode=False)
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    loaded = {m: m in sys.modules for m in HEAVY}
    print(%(mark)r + json.dumps({"loaded": loaded, "chains": spy.chains}))
""")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    env.update(SWEEPER_CACHE=str(cache), COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    return env


def _assert_light(tmp_path: Path, args: list[str]) -> str:
    """Run `sweeper ARGS` in a fresh interpreter (cwd: a temp folder); fail if it loads ray or torch."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", _PROBE % {"heavy": HEAVY, "args": args, "mark": _MARK}],
                          cwd=cwd, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"sweeper {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith(_MARK))
    report = json.loads(line[len(_MARK):])
    heavy = [m for m, loaded in report["loaded"].items() if loaded]
    chains = "\n".join(f"first import of {m}:\n  " + "\n  ".join(report["chains"].get(m, ["?"])) for m in heavy)
    assert not heavy, f"`sweeper {' '.join(args)}` imports {', '.join(heavy)}:\n{chains}"
    return done.stdout


def test_status_loads_neither_ray_nor_torch(tmp_path):
    out = tmp_path / "sweep"
    build = textwrap.dedent(f"""
        from pathlib import Path
        from sweeper.plan import make_plan
        from sweeper.space import load_space
        from sweeper.sweep.launch import write_manifest
        from sweeper.sweep.ledger import Ledger
        write_manifest(Ledger(Path({str(out)!r})), make_plan(load_space("micro")), "micro")
    """)
    # The folder is built in its own process (planning may load torch: that is allowed there).
    made = subprocess.run([sys.executable, "-c", build], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert (out / "manifest.json").is_file() or any(out.rglob("*.json")), "no manifest written"
    stdout = _assert_light(tmp_path, ["status", "--out", str(out)])
    assert "fft" in stdout and "lora" in stdout, stdout  # it did show the grid's trials


def test_plan_help_loads_neither_ray_nor_torch(tmp_path):
    stdout = _assert_light(tmp_path, ["plan", "--help"])
    assert "--space" in stdout, stdout


def test_fit_on_a_csv_loads_neither_ray_nor_torch(tmp_path):
    table = tmp_path / "points.csv"
    sizes = [1e6, 2e6, 4e6, 8e6, 1.6e7, 3e7]
    table.write_text("N,loss\n" + "".join(f"{n:g},{1.7 + 400 * n ** -0.3:.6f}\n" for n in sizes))
    out = tmp_path / "fit"
    _assert_light(tmp_path, ["fit", str(table), "--x", "N", "--y", "loss", "--bootstrap", "20", "--out", str(out)])
    assert (out / "results.json").is_file(), sorted(p.name for p in out.iterdir()) if out.exists() else out


# ---------------------------------------------------------------------------------------------------
# Packaging.


def _listed_packages() -> tuple[set[str], dict[str, str]]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(setuptools["packages"]), dict(setuptools.get("package-dir", {}))


def test_every_package_is_listed_in_pyproject():
    listed, mapped = _listed_packages()
    # Folders with __init__.py, and folders of Python files without one (imported as namespace
    # packages: setuptools ships them only when they are listed, too).
    on_disk = {".".join(d.relative_to(ROOT).parts) for d in _python_folders()}
    on_disk |= {".".join(p.parent.relative_to(ROOT).parts) for top in TOP_PACKAGES
                for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert {"sweeper", "analysis", "sweeper.backend", "sweeper.cli"} <= on_disk  # not vacuous
    unlisted = sorted(on_disk - listed)
    assert not unlisted, f"packages missing from [tool.setuptools] packages in pyproject.toml: {unlisted}"
    # Listed, but no such folder: sweeper.search_spaces is the top-level search_spaces/ (package-dir).
    assert mapped == {"sweeper.search_spaces": "search_spaces"}, mapped
    assert list((ROOT / "search_spaces").glob("*.yaml")), "search_spaces/ holds no space"
    missing = sorted(p for p in listed - on_disk if p not in mapped)
    assert not missing, f"listed in pyproject.toml but not in the tree: {missing}"


def test_every_package_folder_has_an_init():
    """A folder of modules without __init__.py is an implicit namespace package: `find_packages`,
    setuptools' editable finder and tools that walk packages treat it unlike its siblings."""
    bare = sorted(str(d.relative_to(ROOT)) for d in _python_folders() if not (d / "__init__.py").is_file())
    assert not bare, f"package folders without __init__.py: {bare}"


@pytest.mark.slow
def test_wheel_runs_plan_from_its_own_copy(tmp_path):
    pytest.importorskip("build", reason="the `build` package is not installed (pip install build)")
    # Built from a copy of the files a wheel is made of, not in the checkout: setuptools would leave
    # build/ and a refreshed *.egg-info there, and a stale build/lib could put removed modules in the wheel.
    import shutil

    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sweeper", "analysis", "search_spaces"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for licence in ROOT.glob("LICEN[CS]E*"):
        shutil.copy2(licence, source / licence.name)
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
                           cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    (wheel,) = dist.glob("sweeper-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # The dependencies: this venv's site-packages, as a plain path line. A path line in a .pth is only
    # appended to sys.path (it is no site dir), so the .pth files there, the editable install's
    # `__editable__*.pth` among them, are not run: its finder is never installed, and the wheel's
    # copy in the fresh venv's own site-packages, earlier on sys.path, is the one imported.
    (site / "zz_sweeper_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = _env(tmp_path)
    env.pop("VIRTUAL_ENV", None)
    where = subprocess.run(
        [python, "-c", "import json, sweeper, sweeper.space, sweeper.sweep.ledger, analysis; print(json.dumps("
                       "[sweeper.__file__, str(sweeper.space.spaces_dir()), sweeper.sweep.ledger.__file__, "
                       "analysis.__file__]))"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    for path in json.loads(where.stdout):
        assert Path(path).resolve().is_relative_to(venv.resolve()), f"imported from outside the wheel: {path}"
    assert (Path(json.loads(where.stdout)[1]) / "micro.yaml").is_file(), "the wheel ships no micro.yaml"

    planned = subprocess.run([python, "-m", "sweeper", "plan", "--space", "micro"], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=300)
    assert planned.returncode == 0, planned.stdout[-4000:] + planned.stderr[-4000:]
    assert re.search(r"plan: space 'micro', ladder 'micro', \d+ cells", planned.stdout), planned.stdout[-4000:]
    for method in ("fft", "lora"):
        assert method in planned.stdout, planned.stdout[-4000:]


# ---------------------------------------------------------------------------------------------------
# Repeated blocks: one piece of code serves where the logic is the same.

BLOCK = 6  # lines
SUBSTANTIAL = 12  # characters: a line shorter than this (`)`, `return x`, `else:`) says little on its own


def repeated_blocks(files: list[Path]) -> list[tuple[str, str]]:
    """Pairs of places where the same BLOCK lines of code stand (blank lines and comments skipped, each line
    stripped), leaving out runs of mostly short lines (closing brackets, `pass`, ...). A run that repeats
    within itself (BLOCK + 1 equal lines) is not a second place."""
    first: dict[tuple[str, ...], tuple[Path, int]] = {}
    found = []
    for path in files:
        lines = [(n, text.strip()) for n, text in enumerate(path.read_text().splitlines(), 1)
                 if text.strip() and not text.strip().startswith("#")]
        for i in range(len(lines) - BLOCK + 1):
            block = tuple(text for _, text in lines[i:i + BLOCK])
            if sum(len(text) > SUBSTANTIAL for text in block) < BLOCK - 2:
                continue
            here = (path, lines[i][0])
            seen = first.setdefault(block, here)
            if seen[0] != path or lines[i][0] - seen[1] >= BLOCK:
                found.append((f"{seen[0].relative_to(ROOT)}:{seen[1]}", f"{path.relative_to(ROOT)}:{here[1]}"))
    return found


def test_repeated_blocks_are_found():
    code = "\n".join(f"value_{n} = compute_something({n}, extra_argument=True)" for n in range(BLOCK))
    with_copy = ROOT / "tests" / "_repeated_probe.py"
    try:
        with_copy.write_text(f"{code}\nprint('between')\n{code}\n")
        assert len(repeated_blocks([with_copy])) == 1
        with_copy.write_text(code + "\n")
        assert repeated_blocks([with_copy]) == []
    finally:
        with_copy.unlink(missing_ok=True)


def test_no_block_of_six_lines_is_repeated():
    files = [p for top in ("sweeper", "analysis", "benchmarks", "tests") for p in sorted((ROOT / top).rglob("*.py"))
             if "__pycache__" not in p.parts]
    repeated = repeated_blocks(files)
    assert not repeated, "the same lines stand twice: " + "; ".join(f"{a} ~ {b}" for a, b in repeated[:10])
