"""Packaging: the npe2 manifest is found by editable and wheel installs; imports stay light; core has no Qt."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def test_manifest_symlink_is_the_root_manifest():
    inner = REPO / "napari_ssl" / "napari.yaml"
    assert inner.is_symlink()
    assert inner.read_bytes() == (REPO / "napari.yaml").read_bytes()
    manifest = yaml.safe_load((REPO / "napari.yaml").read_text())
    assert manifest["name"] == "napari-ssl"  # equals the distribution name


def test_installed_plugin_lists_its_contributions():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-ssl")
    contributions = manifest.contributions
    assert {r.command for r in contributions.readers} == {"napari-ssl.get_reader"}
    assert {w.command for w in contributions.writers} == {"napari-ssl.write_image", "napari-ssl.write_labels"}
    assert [s.key for s in contributions.sample_data] == ["phantom"]
    for command in contributions.commands:  # every python_name resolves to a callable
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr)), command.id


@pytest.mark.slow
def test_wheel_carries_the_real_manifest(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_ssl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("napari_ssl/napari.yaml")
        assert (info.external_attr >> 16) & 0o170000 != 0o120000  # a regular file, not a symlink
        text = zf.read("napari_ssl/napari.yaml")
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
        bundled = {n: zf.read(n) for n in zf.namelist() if n.startswith("napari_ssl/models_bundled/")}
    assert text == (REPO / "napari.yaml").read_bytes()
    from napari_ssl.inference.bundled import BUNDLED

    for folder in BUNDLED.values():  # the demonstration model ships, byte for byte
        for name in ("meta.json", "model.safetensors"):
            assert bundled[f"napari_ssl/{folder}/{name}"] == (REPO / "napari_ssl" / folder / name).read_bytes()
    assert "napari-ssl = napari_ssl:napari.yaml" in entry_points
    assert "napari-ssl = napari_ssl.cli:main" in entry_points
    manifest = tmp_path / "napari.yaml"
    manifest.write_bytes(text)
    check = subprocess.run(
        ["npe2", "validate", str(manifest)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_import_loads_neither_torch_nor_qt():
    code = (
        "import sys, napari_ssl, napari_ssl.io.volume, napari_ssl.io, napari_ssl.cli;"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6', 'magicgui', 'monai') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_qt_or_napari():
    offenders = {}
    for path in (REPO / "napari_ssl").rglob("*.py"):
        if "_napari" in path.relative_to(REPO).parts:
            continue
        bad = _imports(path) & set(GUI_MODULES)
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of ``path`` that are code, not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_core_never_names_the_gui() -> None:
    """The core reaches the GUI through nothing: no module outside ``napari_ssl/_napari`` names ``_napari``, not even in
    a ``"module:attribute"`` string that the registry would import (a pretext's records name its own core modules;
    the dock finds them through the registry)."""
    found = []
    for path in sorted((REPO / "napari_ssl").rglob("*.py")):
        if "_napari" in path.relative_to(REPO / "napari_ssl").parts:
            continue
        found += [f"{path.relative_to(REPO)}:{line}: {text!r}" for line, text in _code_strings(path)
                  if re.search(r"\b_napari\b", text)]
    assert not found, "core modules naming napari_ssl._napari:\n" + "\n".join(found)


def test_the_gui_name_check_sees_strings(tmp_path: Path) -> None:
    """The check above finds a reference in a string (and skips a docstring's words)."""
    module = tmp_path / "m.py"
    module.write_text('"""Drawn by napari_ssl._napari.explorer."""\nPREVIEW = "napari_ssl._napari.explorer.x:f"\n')
    assert _code_strings(module) == [(2, "napari_ssl._napari.explorer.x:f")]


PRIVATE_NAPARI = re.compile(
    r"\b(viewer|window|layers?|canvas|dims|camera|qt_viewer|existing|target|Viewer)\._[a-z]\w*"
    r"|\._(qt_window|qt_viewer|overlays|activate_on_insert|clear_extent|add_layer_from_data|instances)\b"
    r"|__wrapped__"
    r"""|getattr\((?!self\b)[\w.]+, ["']_[a-z]"""
)


def test_private_napari_names_live_in_one_adapter() -> None:
    """napari is unpinned: a private napari name used anywhere but napari_ssl/_napari/napari_private.py (which tests
    each use against the installed napari) would break silently with a release."""
    package = Path(__file__).resolve().parents[1] / "napari_ssl"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "napari_private.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if PRIVATE_NAPARI.search(code) and "self._" not in code.split(".")[0]:
                found.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert not found, "private napari names outside napari_private.py:\n" + "\n".join(found)


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside a function (a function-level import only
    hides a circle from Python, not from a reader)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name if name and name != package.name else None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {known(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                targets |= {known(f"{base}.{alias.name}") or known(base) for alias in node.names}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def test_no_import_circles() -> None:
    """Data flows one way (DESIGN.md): no module imports, even inside a function, a module that imports it back."""
    graph = _import_graph(REPO / "napari_ssl")
    circles = []
    for start in sorted(graph):  # a path from start back to start, by depth-first search
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen and nxt > start:  # each circle reported once, from its smallest module
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, "import circles:\n" + "\n".join(circles)


#: the stages, lowest first: a module imports only modules of its own stage or of a stage at or below its rank
#: (the longest matching name decides: ``models.sizes``, the torch-free backbone sizes, sits with the leaves)
STAGES = {
    "napari_ssl": 0, "io": 0, "events": 0, "device": 0, "metrics": 0, "classes": 0, "models.sizes": 0,
    "runner": 1, "phantom": 1, "preprocess": 1,
    "plan": 2,
    "pretext": 3,
    "models": 4,
    "meta": 5,
    "checkpoint": 6,
    "inference": 7,
    "training": 8,
    "study": 9,
    "commands": 10, "_napari": 10,
    "cli": 11,
}


#: a pretext unit (``pretext/<unit>/``) holds parts of several stages, ranked by what they are: its network (heads,
#: losses, metrics; torch) with the models, its network answer in the explorer (a loaded checkpoint) with the study;
#: its task, training sample and explorer drawing stay at the pretext stage
UNIT_PARTS = {"network": "models", "answer": "study"}


def _stage(module: str) -> tuple[str, int]:
    name = module.removeprefix("napari_ssl.") if module != "napari_ssl" else "napari_ssl"
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "pretext" and parts[2] in UNIT_PARTS:
        return UNIT_PARTS[parts[2]], STAGES[UNIT_PARTS[parts[2]]]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in STAGES:
            return key, STAGES[key]
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES in tests/test_package.py")


def test_imports_go_down_the_stages() -> None:
    """Data flows one way (DESIGN.md): reader -> Volume -> plan -> pretext/models -> checkpoint -> inference ->
    training -> study, with the docks and commands on top; no module imports a stage above its own."""
    upward = []
    for module, targets in sorted(_import_graph(REPO / "napari_ssl").items()):
        stage, rank = _stage(module)
        for target in sorted(targets):
            other, other_rank = _stage(target)
            if other != stage and other_rank > rank:
                upward.append(f"{module} ({stage}) imports {target} ({other}, higher)")
    assert not upward, "imports against the stages:\n" + "\n".join(upward)
