"""Dependencies point one way, and nothing imports in a circle (README "Layout", DESIGN "Architecture").

Every ``import`` in the package is read from the source, including those inside functions (a lazy
import is still a dependency). A package may import only packages of a lower rank; inside a package,
modules must not import each other in a circle. There is no exception list: a new upward import
fails here, and the fix is to move the shared code down (or pass a callback up).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "torchshield"

# Lowest first. A package may import any package listed before it, never one after it.
ORDER = [
    ["errors", "_lazy", "_version"],  # import nothing of torchshield
    ["atomic", "jsonable"],  # crash-safe file writes; plain JSON from our objects
    ["partials"],   # decrypted plaintext under locked temporary names, swept after a crash
    ["crypto"],     # keys, envelope, streaming AEAD, signatures, the keyed hash chain
    ["data"],       # PII, anonymisation, tabular privacy, the one table reader
    ["nn"],         # the shared training loop, the architectures zoo, tables to tensors
    ["model"],      # bundles, model sources, scanner, watermarks, obfuscation
    ["<facade>"],   # torchshield/__init__.py: save/load/inspect/scan (it imports model only)
    ["robust"],     # attacks, defences, certification
    ["privacy"],    # accounting, DP queries and ledger, membership audit
    ["train"],      # training runs from a config, DP-SGD
    ["federated"],  # Flower apps and strategies
    ["assess"],     # checks -> findings -> report
    ["store"],      # encrypted artifact store
    ["gateway"],    # privacy gateway for text models (PII in, leaks out)
    ["serve"],      # the inference service
    ["demo"],       # the end-to-end pipeline
    ["cli"],        # the command line
    ["__main__"],   # python -m torchshield
]
RANK = {name: rank for rank, names in enumerate(ORDER) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    return _imports_in(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def _imports_in(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) for every torchshield import in the source, relative ones resolved,
    at any depth (module level, inside functions, under ``if TYPE_CHECKING``)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from torchshield.x import y` may name a submodule y: count the most specific module.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((node.lineno, sub if _is_module(sub) else target))
    return [(line, name) for line, name in out if name == "torchshield" or name.startswith("torchshield.")]


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "<facade>"
    return parts[1]


def _graph() -> dict[str, list[tuple[int, str]]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_package_has_a_rank():
    packages = {_package(m) for m in _graph()}
    assert packages <= set(RANK), f"give these packages a place in ORDER: {sorted(packages - set(RANK))}"


def test_no_package_imports_a_higher_one():
    upward = []
    for module, imports in _graph().items():
        src = _package(module)
        for line, target in imports:
            dst = _package(target)
            if dst != src and RANK.get(dst, -1) >= RANK.get(src, -1):
                upward.append(f"{module}:{line} imports {target} ({src} may not import {dst})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_module_cycles():
    graph = {m: {t for _, t in imports if t != m} for m, imports in _graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(map(str, cycles))


def test_the_reader_finds_lazy_and_relative_imports():
    source = (
        "import os\n"
        "def f():\n"
        "    from torchshield.cli.output import progress\n"
        "    class C:\n"
        "        def g(self):\n"
        "            from .loop import fit\n"
        "            import torchshield.serve.app\n"
    )
    found = _imports_in(source, "torchshield.train.run", is_package=False)
    assert [name for _, name in found] == ["torchshield.cli.output", "torchshield.train.loop", "torchshield.serve.app"]
