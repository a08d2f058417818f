"""The package's structure (issue #20) read from the source: who imports whom, sizes, tests.

Nothing of vmagent is imported: each module's imports are read from its syntax tree, relative
imports resolved against its package. ``python tests/test_structure.py`` prints the imports between
subsystems and everything these tests refuse, for a quick look at the state of the tree.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vmagent"
TESTS = REPO / "tests"

SUBSYSTEMS = ("pilot", "pool_ce", "monitor", "mjf", "client")
SERVER = "vmagent.manager"
MAX_LINES = 300
SIZE_MARK = "# size:"


class Import(NamedTuple):
    """One import in a module: what it reaches and, for ``from X import name``, the name."""

    module: str  # the importing module, dotted
    target: str  # the module or package imported, dotted and absolute
    name: Optional[str]  # a name taken from a package (not itself a module), else None
    line: int

    def describe(self) -> str:
        """``importer:line -> target`` or ``importer:line -> package:name``, as failures list it."""
        what = self.target if self.name is None else f"{self.target}:{self.name}"
        return f"{self.module}:{self.line} -> {what}"


def module_name(path: Path) -> str:
    """The dotted name of the module at ``path`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    """Every module of the vmagent package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def is_package(name: str) -> bool:
    """Whether the dotted ``name`` is a package of the tree (it has an ``__init__.py``)."""
    return name in MODULES and MODULES[name].name == "__init__.py"


def resolve(module: str, level: int, target: Optional[str]) -> str:
    """The absolute module a ``from`` import in ``module`` names (``level`` dots, then ``target``)."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str) -> Iterator[Import]:
    """Every import statement of ``module``, at any depth (function-level imports included)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node.level, node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    yield Import(module, submodule, None, node.lineno)
                else:
                    yield Import(module, source, alias.name, node.lineno)


def module_bindings(module: str) -> Dict[str, str]:
    """Local names bound to whole modules by ``module``'s imports (``from .. import mjf``: mjf)."""
    tree = ast.parse(MODULES[module].read_text())
    bound: Dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    bound[head] = head
        elif isinstance(node, ast.ImportFrom):
            source = resolve(module, node.level, node.module)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    bound[alias.asname or alias.name] = submodule
    return bound


def dotted(node: ast.expr) -> Optional[List[str]]:
    """``a.b.c`` as ``["a", "b", "c"]``, or None when the expression is not a plain name chain."""
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def attribute_uses(module: str) -> Iterator[Import]:
    """``mjf.read_features`` in ``module``, where ``mjf`` is a bound package: the name it takes."""
    bound = module_bindings(module)
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "ctx", None), ast.Del):
            continue
        chain = dotted(node)
        if chain is None or chain[0] not in bound:
            continue
        full = bound[chain[0]].split(".") + chain[1:]
        for cut in range(len(full) - 1, 0, -1):
            package = ".".join(full[:cut])
            if is_package(package):
                yield Import(module, package, full[cut], node.lineno)
                break


def subsystem(name: str) -> Optional[str]:
    """The subsystem (``pilot``, ``mjf``...) the dotted ``name`` belongs to, if any."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "vmagent" and parts[1] in SUBSYSTEMS:
        return parts[1]
    return None


def exported(package: str) -> FrozenSet[str]:
    """The names a package's ``__init__`` lists in a literal ``__all__`` (none without one)."""
    tree = ast.parse(MODULES[package].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


def cross_subsystem_imports() -> List[Import]:
    """Every import, or attribute taken from an imported package, between two subsystems."""
    found: Set[Import] = set()
    for module in MODULES:
        own = subsystem(module)
        if own is None:
            continue
        for each in list(imports_of(module)) + list(attribute_uses(module)):
            other = subsystem(each.target)
            if other is not None and other != own:
                found.add(each)
    return sorted(found, key=lambda i: (i.module, i.line, i.target, i.name or ""))


def allowed(edge: Import) -> bool:
    """Whether a cross-subsystem import goes through the other's package and its ``__all__``."""
    package = f"vmagent.{subsystem(edge.target)}"
    if edge.target != package:
        return False
    return edge.name is None or edge.name in exported(package)


def internal_imports() -> List[str]:
    """Imports of one subsystem into another's modules or of names its package does not export."""
    return [edge.describe() for edge in cross_subsystem_imports() if not allowed(edge)]


def in_area(module: str, area: Tuple[str, ...]) -> bool:
    """Whether ``module`` is one of the dotted names in ``area`` or inside one of them."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in area)


VM_SIDE = tuple(f"vmagent.{name}" for name in SUBSYSTEMS) + ("vmagent.core",)
FOUNDATION = tuple(
    sorted(module_name(path) for path in PACKAGE.glob("config*.py"))
    + [
        "vmagent.errors",
        "vmagent.clock",
        "vmagent.interfaces",
        "vmagent.plugins",
        "vmagent.process",
        "vmagent.schemas",
    ]
)


def imports_into(importers: Tuple[str, ...], forbidden: Tuple[str, ...]) -> List[str]:
    """Imports by modules in ``importers`` of anything in ``forbidden``, described."""
    found = []
    for module in MODULES:
        if not in_area(module, importers):
            continue
        for each in imports_of(module):
            reached = each.target if each.name is None else f"{each.target}.{each.name}"
            if in_area(each.target, forbidden) or in_area(reached, forbidden):
                found.append(each.describe())
    return found


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def top_length(text: str) -> int:
    """How many lines come before the module's first statement other than its docstring."""
    body = ast.parse(text).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body[0].lineno - 1 if body else len(text.splitlines())


def oversized() -> List[str]:
    """Modules of vmagent/ longer than the limit without a ``# size:`` reason at their top."""
    found = []
    for path in MODULES.values():
        text = path.read_text()
        lines = text.splitlines()
        top = [line.strip() for line in lines[: top_length(text)]]
        reason = any(line.startswith(SIZE_MARK) and line[len(SIZE_MARK) :].strip() for line in top)
        if len(lines) > MAX_LINES and not reason:
            found.append(f"{shown(path)}: {len(lines)} lines")
    return found


def unpackaged() -> List[str]:
    """Packages of vmagent/ that pyproject.toml's ``[tool.setuptools] packages`` leaves out."""
    text = (REPO / "pyproject.toml").read_text()
    section = text[text.index("[tool.setuptools]") :]
    found = re.search(r"^packages\s*=\s*\[(.*?)\]", section, re.S | re.M)
    listed = set(re.findall(r'"([\w.]+)"', found.group(1) if found else ""))
    return sorted(name for name in MODULES if is_package(name) and name not in listed)


def suite_tests(root: Path = TESTS) -> Iterator[Tuple[Path, ast.Module, ast.FunctionDef]]:
    """Every test function under ``root`` with its file and the file's syntax tree."""
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield path, tree, node


def checks_something(node: ast.AST) -> bool:
    """Whether ``node`` holds an ``assert`` or a call of ``raises``, ``warns`` or ``fail``."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Assert):
            return True
        if isinstance(inner, ast.Call):
            chain = dotted(inner.func) or []
            if chain[-1:] in (["raises"], ["fail"], ["warns"]):
                return True
    return False


def unchecked_tests(root: Path = TESTS) -> List[str]:
    """Tests without an assertion of their own or in a helper of their file that they call."""
    found = []
    for path, tree, test in suite_tests(root):
        helpers = {
            node.name: node
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and checks_something(node)
        }
        called = {
            chain[-1]
            for inner in ast.walk(test)
            if isinstance(inner, ast.Call)
            for chain in [dotted(inner.func) or [""]]
        }
        if not checks_something(test) and not (called & set(helpers)):
            found.append(f"{shown(path)}::{test.name}")
    return found


SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def undocumented_tests(root: Path = TESTS) -> List[str]:
    """Tests without a docstring, or whose docstring says more than one sentence."""
    found = []
    for path, _, test in suite_tests(root):
        text = " ".join((ast.get_docstring(test) or "").split())
        name = f"{shown(path)}::{test.name}"
        if not text:
            found.append(f"{name}: no docstring")
        elif len(SENTENCE_BREAK.split(text)) > 1:
            found.append(f"{name}: a docstring of {len(SENTENCE_BREAK.split(text))} sentences")
    return found


def listing(found: List[str]) -> str:
    """One offender a line, for failure messages."""
    return "\n  " + "\n  ".join(found)


def test_subsystems_import_each_other_only_through_their_packages():
    """A subsystem takes from another only names its package's ``__all__`` exports."""
    found = internal_imports()
    assert not found, "imports of another subsystem's internals:" + listing(found)


def test_the_vm_side_never_imports_the_server():
    """No subsystem and nothing in vmagent.core imports vmagent.manager."""
    found = imports_into(VM_SIDE, (SERVER,))
    assert not found, "VM-side imports of the manager's server:" + listing(found)


def test_core_and_foundation_import_no_subsystem():
    """vmagent.core and the foundation modules import no subsystem and not the server."""
    subsystems = tuple(f"vmagent.{name}" for name in SUBSYSTEMS) + (SERVER,)
    found = imports_into(("vmagent.core",) + FOUNDATION, subsystems)
    assert not found, "core or foundation importing a subsystem:" + listing(found)


def test_modules_stay_under_the_size_limit():
    """Every module of vmagent/ is at most 300 lines unless its top says ``# size: <reason>``."""
    found = oversized()
    title = f"modules over {MAX_LINES} lines without a '{SIZE_MARK}' reason:"
    assert not found, title + listing(found)


def test_every_package_is_shipped():
    """Every package of vmagent/ is listed in pyproject.toml, so that a built wheel holds it."""
    found = unpackaged()
    assert not found, "packages missing from [tool.setuptools] packages:" + listing(found)


def test_every_test_checks_something_and_says_what():
    """Every test of the suite has a one-sentence docstring and an assertion (its own or a helper's)."""
    found = undocumented_tests() + [f"{name}: no assertion" for name in unchecked_tests()]
    assert not found, "tests that say or check nothing:" + listing(found)


def test_the_graph_reader_sees_what_the_rules_judge():
    """The reader resolves relative imports, package exports and attribute use as the rules need."""
    assert resolve("vmagent.pool_ce.sources.spool", 3, "config") == "vmagent.config"
    assert resolve("vmagent.pool_ce.sources", 1, "spool") == "vmagent.pool_ce.sources.spool"
    assert resolve("vmagent.mjf.command", 2, None) == "vmagent"
    assert "read_features" in exported("vmagent.mjf")
    assert allowed(Import("vmagent.pool_ce.x", "vmagent.mjf", "read_features", 1))
    assert allowed(Import("vmagent.pool_ce.x", "vmagent.mjf", None, 1))
    assert not allowed(Import("vmagent.pool_ce.x", "vmagent.mjf.features", None, 1))
    assert not allowed(Import("vmagent.pool_ce.x", "vmagent.mjf", "_private", 1))
    assert MODULES, "no module found under vmagent/"


def test_the_rules_refuse_a_module_that_breaks_them(tmp_path, monkeypatch):
    """A planted module reaching into other subsystems and the server is named by each rule."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from .. import mjf\n"
        "from ..mjf import read_features\n"
        "from ..pilot.command import Context\n"
        "from ..client import credentials\n"
        "import vmagent.manager.app\n"
        "mjf.features.write_atomic\n"
        "mjf.machine_dir\n" + "x = 1\n" * MAX_LINES
    )
    monkeypatch.setitem(MODULES, "vmagent.pool_ce.planted", planted)
    refused = [line for line in internal_imports() if line.startswith("vmagent.pool_ce.planted:")]
    assert refused == [
        "vmagent.pool_ce.planted:3 -> vmagent.pilot.command:Context",
        "vmagent.pool_ce.planted:4 -> vmagent.client.credentials",
        "vmagent.pool_ce.planted:6 -> vmagent.mjf:features",
    ]
    assert "vmagent.pool_ce.planted:5 -> vmagent.manager.app" in imports_into(VM_SIDE, (SERVER,))
    assert f"{planted}: {MAX_LINES + 7} lines" in oversized()


def test_the_rules_refuse_tests_that_say_or_check_nothing(tmp_path):
    """Planted tests without a docstring, with two sentences or without an assertion are named."""
    planted = tmp_path / "test_planted.py"
    planted.write_text(
        "def check(x):\n"
        "    assert x\n\n"
        "def test_quiet():\n"
        "    check(1)\n\n"
        "def test_talkative():\n"
        '    """It runs. It checks nothing."""\n\n'
        "def test_fine():\n"
        '    """Raising is a check, e.g. of a refusal."""\n'
        "    with pytest.raises(ValueError):\n"
        "        int('x')\n"
    )
    assert undocumented_tests(tmp_path) == [
        f"{planted}::test_quiet: no docstring",
        f"{planted}::test_talkative: a docstring of 2 sentences",
    ]
    assert unchecked_tests(tmp_path) == [f"{planted}::test_talkative"]


def report() -> str:
    """The imports between subsystems, each marked, then what every rule refuses now."""
    lines = ["imports between subsystems (ok: through the package's __all__; NO: internals):"]
    for edge in cross_subsystem_imports():
        lines.append(f"  {'ok' if allowed(edge) else 'NO'}  {edge.describe()}")
    rules = [
        ("subsystem internals", internal_imports()),
        ("VM side importing the server", imports_into(VM_SIDE, (SERVER,))),
        (
            "core/foundation importing a subsystem",
            imports_into(
                ("vmagent.core",) + FOUNDATION,
                tuple(f"vmagent.{name}" for name in SUBSYSTEMS) + (SERVER,),
            ),
        ),
        (f"modules over {MAX_LINES} lines", oversized()),
        ("packages missing from pyproject.toml", unpackaged()),
        ("tests without a one-sentence docstring", undocumented_tests()),
        ("tests without an assertion", unchecked_tests()),
    ]
    for title, found in rules:
        lines.append(f"{title}: {len(found)}" + (listing(found) if found else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    sys.exit(0)
