"""The functional core stays pure: every module the state machine (decide/apply) is built from imports no
clock, randomness, I/O or concurrency, and calls no clock. Time and ids come in with the command."""

from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = ["engine.machine"]  # the state machine every node and the simulator apply the log with
ALLOWED = {"__future__", "collections", "dataclasses", "functools", "hashlib", "re", "typing", "msgpack",
           "ipaddress"}  # ipaddress: pure parsing and arithmetic
IMPURE_CALLS = {("time", "time"), ("time", "monotonic"), ("datetime", "now"), ("datetime", "utcnow"),
                ("datetime", "today"), ("os", "urandom"), ("uuid", "uuid4"), ("random", "random")}


def _imports(module: str) -> tuple[ast.Module, set[str]]:
    path = os.path.join(REPO, *module.split(".")) + ".py"
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "engine":
                names |= {f"engine.{a.name}" for a in node.names}
    return tree, names


def core_modules() -> dict[str, ast.Module]:
    seen: dict[str, ast.Module] = {}
    todo = list(ROOTS)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen[module], names = _imports(module)
        todo += [n for n in names if n.startswith("engine.")]
    return seen


def test_the_state_machine_imports_nothing_impure():
    modules = core_modules()
    assert {"engine.decide", "engine.state", "engine.access", "engine.tasks", "engine.webhooks",
            "engine.datacenter"} <= set(modules)
    for module in sorted(modules):
        _, names = _imports(module)
        foreign = sorted(n for n in names if not n.startswith("engine") and n.split(".")[0] not in ALLOWED)
        assert not foreign, f"{module} imports {foreign}: the core takes time and ids from its commands"


def test_the_state_machine_calls_no_clock():
    for module, tree in sorted(core_modules().items()):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    isinstance(node.func.value, ast.Name):
                assert (node.func.value.id, node.func.attr) not in IMPURE_CALLS, \
                    f"{module}:{node.lineno} calls {node.func.value.id}.{node.func.attr}"
