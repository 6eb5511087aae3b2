"""The layering rules of the packages, checked on every `make test`.

- The import-linter contracts of pyproject.toml ([tool.importlinter]): jobs and libraries never import
  prefect, libraries never import the orchestration or the training jobs, storage is the bottom layer.
- No import cycle between the top-level packages (import-linter's acyclic_siblings needs a common parent
  package, which top-level packages lack, so grimp's graph is checked here).
- Orchestration (flows/, tasks/) never imports torch at module level, directly or through another module.

Each rule is also shown to fail on a known-bad tree or graph, so a rule that stopped biting would be seen.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import grimp
import pytest

from conf import REPO_ROOT

LINTER = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
PACKAGES = tuple(LINTER["root_packages"])
ORCHESTRATION = ("flows", "tasks")
# External packages that load torch when imported.
TORCH = frozenset({"torch", "deepspeed"})


# ------------------------------------------------------------------------------------ import-linter

def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the tree at `root` (its pyproject.toml and packages), without a cache folder."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def contract_lines(output: str) -> dict[str, str]:
    """{contract name: KEPT | BROKEN} from lint-imports' summary."""
    names = [contract["name"] for contract in LINTER["contracts"]]
    result = {}
    for line in output.splitlines():
        for name in names:
            for status in ("KEPT", "BROKEN"):
                if line.strip() == f"{name} {status}":
                    result[name] = status
    return result


def copy_tree(tmp_path: Path) -> Path:
    """The packages' Python files and pyproject.toml, copied (a tree a test may break)."""
    root = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package,
                        ignore=lambda folder, names: [n for n in names
                                                      if not n.endswith(".py") and not (Path(folder) / n).is_dir()
                                                      or n == "__pycache__"])
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_import_contracts_hold():
    proc = lint_imports(REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    statuses = contract_lines(proc.stdout)
    assert statuses == {contract["name"]: "KEPT" for contract in LINTER["contracts"]}, proc.stdout


@pytest.mark.parametrize(("contract", "probe", "source"), [
    ("Jobs and libraries never import prefect", "data/_probe.py", "import prefect\n"),
    ("Jobs and libraries never import prefect", "training/_probe.py",
     "def later():\n    from prefect import flow\n"),
    ("Libraries never import the orchestration or the training jobs", "model/_probe.py",
     "from tasks.cache_keys import sha256_text\n"),
    ("Libraries never import the orchestration or the training jobs", "rewards/_probe.py", "import training\n"),
    ("storage is the bottom layer: it imports none of the packages built on it", "storage/_probe.py",
     "from data.config import SPLITS\n"),
])
def test_each_contract_breaks_on_a_forbidden_import(tmp_path, contract, probe, source):
    root = copy_tree(tmp_path)
    (root / probe).write_text(source)
    proc = lint_imports(root)
    assert proc.returncode != 0
    assert contract_lines(proc.stdout)[contract] == "BROKEN", proc.stdout
    assert probe[:-3].replace("/", ".") in proc.stdout  # the report names the offending module


# ------------------------------------------------------------------------------- cycles of packages

def package_cycles(graph: grimp.ImportGraph, packages: tuple[str, ...]) -> list[list[str]]:
    """The import cycles between `packages` in `graph`: each is a list of packages that import one
    another (a strongly connected component of the package graph), with one import per edge, e.g.
    ["data -> model (data.collator imports model.tokenizer)", "model -> data (...)"]."""
    edges: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for module in sorted(graph.modules):
        source = module.split(".")[0]
        if source not in packages:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            target = imported.split(".")[0]
            if target in packages and target != source:
                edges[source].setdefault(target, (module, imported))
    cycles = []
    for component in strongly_connected(packages, {p: set(edges[p]) for p in packages}):
        if len(component) > 1:
            members = set(component)
            cycles.append([f"{a} -> {b} ({edges[a][b][0]} imports {edges[a][b][1]})"
                           for a in component for b in sorted(edges[a]) if b in members])
    return cycles


def strongly_connected(nodes: tuple[str, ...], successors: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(successors.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return components


def project_graph() -> grimp.ImportGraph:
    """Every import between the project's modules, those under TYPE_CHECKING included (a type-only import
    that closes a cycle is still a layering error)."""
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_no_import_cycle_between_the_top_level_packages():
    cycles = package_cycles(project_graph(), PACKAGES)
    assert cycles == [], "import cycles between packages:\n" + "\n".join("; ".join(c) for c in cycles)


def test_the_cycle_check_names_a_cycle():
    graph = grimp.ImportGraph()
    graph.add_import(importer="data.collator", imported="model.tokenizer")
    graph.add_import(importer="model.tokenizer", imported="data.synth")
    graph.add_import(importer="model.tokenizer", imported="conf")
    assert package_cycles(graph, PACKAGES) == [["data -> model (data.collator imports model.tokenizer)",
                                                "model -> data (model.tokenizer imports data.synth)"]]
    real = project_graph()
    real.add_import(importer="storage.files", imported="flows.plan")  # flows imports storage already
    assert any("storage -> flows (storage.files imports flows.plan)" in cycle for cycle in package_cycles(real, PACKAGES))


# ------------------------------------------------------------------- torch in the orchestration

def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of the project's packages under `root`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules `module` imports when it is imported: import statements outside function bodies (and
    outside `if TYPE_CHECKING:`), with the packages each import also loads."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.module == "__future__":
                    continue
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                walk(node.orelse)
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                walk([n for n in getattr(node, field, []) if isinstance(n, (ast.stmt, ast.excepthandler))])

    walk(ast.parse(path.read_text(encoding="utf-8")).body)
    loaded = set()
    for name in found:  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        parts = name.split(".")
        loaded.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return loaded


def torch_chains(root: Path) -> list[str]:
    """Each orchestration module that loads torch when imported, with the chain of module-level imports."""
    files = module_files(root)
    known = set(files)
    imports = {module: module_level_imports(path, module, known) for module, path in files.items()}
    chains = []
    for start in sorted(m for m in files if m.split(".")[0] in ORCHESTRATION):
        parents: dict[str, str | None] = {start: None}
        queue = [start]
        while queue:
            module = queue.pop(0)
            for imported in sorted(imports.get(module, ())):
                if imported in parents:
                    continue
                parents[imported] = module
                if imported.split(".")[0] in TORCH:
                    chain = [imported]
                    while parents[chain[-1]] is not None:
                        chain.append(parents[chain[-1]])
                    chains.append(" -> ".join(reversed(chain)))
                    queue.clear()
                    break
                if imported in known:
                    queue.append(imported)
    return chains


def test_the_orchestration_never_imports_torch_at_module_level(tmp_path):
    chains = torch_chains(REPO_ROOT)
    assert chains == [], "orchestration modules that import torch when imported:\n" + "\n".join(chains)
    # What the static check claims, seen in a real interpreter: importing every flows/ and tasks/ module
    # leaves torch unloaded.
    modules = sorted(m for m in module_files(REPO_ROOT) if m.split(".")[0] in ORCHESTRATION)
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(TORCH)!r}))")
    env = dict(os.environ, DO_NOT_TRACK="true", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_HOME=str(tmp_path / "prefect"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_torch_check_follows_imports_and_skips_function_bodies(tmp_path):
    root = copy_tree(tmp_path)
    (root / "flows" / "_direct.py").write_text("import torch.nn\n")
    (root / "tasks" / "_through_model.py").write_text("from model import build\n")  # model/build.py imports torch
    (root / "tasks" / "_in_a_function.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
        "def run():\n    import torch\n    return torch\n")
    chains = torch_chains(root)
    assert "flows._direct -> torch.nn" in chains or "flows._direct -> torch" in chains
    assert any(c.startswith("tasks._through_model -> model.build -> torch") for c in chains), chains
    assert not any(c.startswith("tasks._in_a_function") for c in chains)


def test_planning_a_pipeline_imports_no_torch():
    """Building the plan imports every step kind's schema module (validation at planning): none may pull
    torch into the flow's process, even through a function-level import the module graph cannot see."""
    probe = ("import sys\nfrom flows.plan import build_plan\nbuild_plan('full')\nbuild_plan('smoke')\n"
             "print(sorted(m for m in ('torch', 'deepspeed') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
