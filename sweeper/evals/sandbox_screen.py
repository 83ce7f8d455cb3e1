"""A static screen of a program's syntax tree, run before the program is executed (standard library only).

It rejects the constructs that let a program reach into the interpreter that runs it, which no honest
solution to a programming problem needs: frame introspection (`sys._getframe`, `tb_frame`, `f_back`,
`inspect`, `gc.get_referrers`, ...), tracing and profiling hooks (`sys.settrace`, `sys.setprofile`,
audit hooks), the process-level exits and exec (`os._exit`, `os.execv`, ...), foreign memory access
(`ctypes`), reflection that reaches any object (`__subclasses__`, `__globals__`, `__builtins__`,
`__code__`, `__dict__`, `sys.modules`, `__import__`, attribute names computed at run time),
monkeypatching of modules or builtins (`math.fabs = ...`, `setattr(math, ...)`, `import builtins`, a
module-level `def abs`), and a decorator left dangling at the end of the solution, which the harness's
concatenation would apply to the test's own `def check` (`@(lambda f: lambda c: None)`).
`screen(source)` returns the reason, e.g. "uses _getframe (frame introspection)", or None.

The screen is one layer of three (see `sandbox.py`): the program runs with an audit hook that blocks the
same primitives where they are reached dynamically (`eval` of a built string), and its verdict is decided
outside its process.
"""

from __future__ import annotations

import ast
import builtins

# Attribute names (also `from m import name`, and names given to getattr & co as constants).
FORBIDDEN_ATTRIBUTES = {
    **dict.fromkeys(("_getframe", "_current_frames", "_current_exceptions", "f_back", "f_locals", "f_globals",
                     "f_builtins", "f_code", "f_trace", "f_lineno", "tb_frame", "gi_frame", "gi_code", "cr_frame",
                     "cr_code", "ag_frame", "ag_code", "__traceback__"), "frame introspection"),
    **dict.fromkeys(("settrace", "setprofile", "gettrace", "getprofile", "addaudithook"), "tracing or profiling hook"),
    **dict.fromkeys(("get_objects", "get_referrers", "get_referents"), "object-graph introspection"),
    **dict.fromkeys(("_exit", "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
                     "fexecve", "posix_spawn", "posix_spawnp", "fork_exec", "interrupt_main"),
                    "process exit or exec"),
    **dict.fromkeys(("__code__", "__globals__", "__closure__", "__builtins__", "__subclasses__", "__bases__",
                     "__base__", "__mro__", "__getattribute__", "__import__", "__loader__", "__spec__",
                     "__reduce__", "__reduce_ex__", "__defaults__", "__kwdefaults__", "__self__", "__func__",
                     "__objclass__", "__dict__", "modules", "import_module", "reload", "create_builtin", "exec_builtin",
                     "create_dynamic", "exec_dynamic", "get_field"), "reflection"),
}
FORBIDDEN_MODULES = {
    **dict.fromkeys(("inspect", "gc", "traceback"), "introspection"),  # traceback: walk_stack / extract_stack
    **dict.fromkeys(("ctypes", "cffi", "mmap"), "foreign memory access"),
    **dict.fromkeys(("signal", "faulthandler", "atexit"), "signal or exit handlers"),
    **dict.fromkeys(("sys.monitoring", "pdb", "bdb", "trace", "tracemalloc", "profile", "cProfile"), "tracing or profiling"),
    **dict.fromkeys(("builtins", "importlib", "imp", "pkgutil", "runpy", "zipimport", "posix", "nt"), "reflection"),
    **dict.fromkeys(("pickle", "marshal", "shelve", "copyreg", "dill", "cloudpickle"), "object deserialisation"),
}
FORBIDDEN_CALLS = {"__import__": "reflection", "breakpoint": "tracing or profiling hook",
                   "globals": "reflection", "vars": "reflection", "locals": "reflection"}
# Functions that take an attribute name: a constant is screened like `x.name`; a computed one is refused.
ATTRIBUTE_FUNCTIONS = ("getattr", "setattr", "delattr", "hasattr", "attrgetter", "methodcaller")
BUILTINS = frozenset(name for name in dir(builtins) if not name.startswith("_"))


def screen(source: str) -> str | None:
    """The reason to reject `source` without running it, or None. A syntax error is not a reason: the
    program then fails as it would in any harness."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes = list(ast.walk(tree))
    modules: set[str] = set()  # names bound by an import statement (modules, or what was taken from them)
    for node in nodes:  # imports first, wherever they are: `math2.fabs = ...` after `def f(): import math as math2`
        if isinstance(node, ast.Import | ast.ImportFrom):
            reason = _import_reason(node, modules)
            if reason is not None:
                return reason
    for node in nodes:
        reason = _node_reason(node, modules)
        if reason is not None:
            return reason
    return _module_level_reason(tree)


def _node_reason(node: ast.AST, modules: set[str]) -> str | None:
    if isinstance(node, ast.Attribute):
        return _attribute_reason(node.attr)
    if isinstance(node, ast.Name):
        if node.id == "__builtins__":
            return "uses __builtins__ (builtins patching)"
        return None
    if isinstance(node, ast.Global):
        for name in node.names:
            if name in BUILTINS:
                return f"declares the builtin {name} global (builtins patching)"
        return None
    if isinstance(node, ast.Call):
        return _call_reason(node, modules)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.decorator_list:
        # The harness joins solution and tests with a blank line: a decorator ending the solution
        # decorates the tests' first definition. Nobody writes a blank line between @decorator and def.
        last = max(getattr(d, "end_lineno", d.lineno) for d in node.decorator_list)
        if node.lineno > last + 1:
            return f"a decorator is separated from the definition of {node.name} (it would rewrite the tests)"
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        for target in targets:
            for part in _rebound(target):
                base = part
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in modules:
                    return f"assigns {ast.unparse(part)} (monkeypatching a module)"
    return None


def _rebound(target: ast.AST):
    """The attributes a target rebinds (`a.b = `, `a, b.c = `), not those it only indexes (`a.b[k] = `)."""
    if isinstance(target, ast.Attribute):
        yield target
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _rebound(element)
    elif isinstance(target, ast.Starred):
        yield from _rebound(target.value)


def _import_reason(node: ast.Import | ast.ImportFrom, modules: set[str]) -> str | None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            reason = _module_reason(alias.name)
            if reason is not None:
                return reason
            modules.add(alias.asname or alias.name.split(".")[0])
        return None
    reason = _module_reason(node.module or "")
    if reason is not None:
        return reason
    for alias in node.names:
        reason = _attribute_reason(alias.name) or _module_reason(f"{node.module}.{alias.name}")
        if reason is not None:
            return reason
        if alias.name != "*":
            modules.add(alias.asname or alias.name)
    return None


def _attribute_reason(name: str) -> str | None:
    why = FORBIDDEN_ATTRIBUTES.get(name)
    return None if why is None else f"uses {name} ({why})"


def _module_reason(module: str) -> str | None:
    top = module.split(".")[0]
    why = FORBIDDEN_MODULES.get(module) or FORBIDDEN_MODULES.get(top)
    if why is None and top.startswith("_") and top != "__future__":
        why = "private interpreter module"
    return None if why is None else f"imports {module} ({why})"


def _call_reason(node: ast.Call, modules: set[str]) -> str | None:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name in FORBIDDEN_CALLS and isinstance(func, ast.Name):
        return f"calls {name}() ({FORBIDDEN_CALLS[name]})"
    if name not in ATTRIBUTE_FUNCTIONS:
        return None
    if name in ("setattr", "delattr") and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in modules:
        return f"calls {name}() on {node.args[0].id} (monkeypatching a module)"
    position = 0 if name in ("attrgetter", "methodcaller") else 1
    if len(node.args) <= position:
        return None
    argument = node.args[position]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        for part in argument.value.split("."):
            reason = _attribute_reason(part)
            if reason is not None:
                return reason
        return None
    return f"calls {name}() with an attribute name computed at run time (reflection)"


def _module_level_reason(tree: ast.Module) -> str | None:
    """A module-level binding of a builtin's name (`def abs`, `len = ...`, `for max in ...`) changes
    what the test code, which shares the program's namespace, calls: builtins patching by shadowing.
    (Inside a function such a name is a local, which honest code uses all the time.)"""
    for name in _module_bindings(tree):
        if name in BUILTINS:
            return f"binds {name} at module level (shadows the builtin the tests may call)"
    return None


def _module_bindings(tree: ast.Module):
    """The names that statements of the module's own scope bind (not those of function and class
    bodies, nor comprehension variables; a walrus in a module-level comprehension does bind here)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name
            stack.extend(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                stack.extend([*node.bases, *node.keywords])
            else:
                stack.extend([*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)])
            continue
        if isinstance(node, ast.Lambda):
            stack.extend([*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)])
            continue
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            yield from (n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr))
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            yield node.id
        elif isinstance(node, ast.Import | ast.ImportFrom):
            yield from (alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            yield node.name
        elif isinstance(node, ast.MatchMapping) and node.rest:
            yield node.rest
        stack.extend(ast.iter_child_nodes(node))
