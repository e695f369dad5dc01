"""The structure the README's Architecture section promises, checked on the code itself."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "coopt_flower"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``coopt_flower`` module ``path`` imports, at module level or inside a function;
    ``from package import submodule`` counts as the submodule."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (ROOT / Path(*sub.split(".")) / "__init__.py").exists()
                found.add(sub if is_module else node.module)
    return {name for name in found if name.split(".")[0] == "coopt_flower"} | \
        {name for name in found if name.split(".")[0] == "flwr"}


GRAPH = {module_name(p): imports(p) for p in CORE.rglob("*.py")}


def test_the_core_imports_no_flower():
    flower = {m: sorted(i for i in deps if i.split(".")[0] == "flwr") for m, deps in GRAPH.items()}
    assert {m: d for m, d in flower.items() if d} == {}


def test_no_two_core_modules_import_each_other_in_a_circle():
    graph = {m: {d for d in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()}
    state, circles = {}, []

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package's face importing its own submodules is not a circle of the code.
    circles = [c for c in circles if not all(m.startswith(c[0]) or c[0].startswith(m) for m in c)]
    assert circles == []


def test_no_core_module_passes_500_lines():
    long = {module_name(p): n for p in CORE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}
