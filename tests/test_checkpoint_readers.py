"""One place reads a checkpoint's ``meta.json``: :mod:`napari_ssl.checkpoint` (``open_checkpoint``); every other module
of the package gets the typed checkpoint from it. (Ruff's banned-api rule says the same for the core at lint time;
this test covers ``_napari/`` too, where that rule is off.)"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_ssl

PACKAGE = Path(napari_ssl.__file__).parent
RAW_READERS = {"read_meta", "_read_meta"}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def reads_raw_meta(source: str) -> bool:
    """Whether a module reads checkpoint JSON itself: it calls the raw reader, or it parses JSON and names the
    checkpoint's meta file (``META_FILE`` or a ``"meta.json"`` that is not documentation)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    # ``checkpoint.read_meta`` is ours; another library's method of that name (MONAI's ConfigParser.read_meta reads a
    # bundle's metadata.json) is not
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
              and isinstance(n.value, ast.Name) and n.value.id == "checkpoint"}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("napari_ssl")
              for a in n.names}
    if names & RAW_READERS:
        return True
    parses_json = any(isinstance(n, ast.Attribute) and n.attr in ("load", "loads") and isinstance(n.value, ast.Name)
                      and n.value.id == "json" for n in ast.walk(tree))
    names_meta = "META_FILE" in names or any(
        isinstance(n, ast.Constant) and isinstance(n.value, str) and "meta.json" in n.value and id(n) not in docs
        for n in ast.walk(tree))
    return parses_json and names_meta


def raw_meta_readers(root: Path = PACKAGE) -> list[str]:
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                  if reads_raw_meta(p.read_text(encoding="utf-8")))


def test_only_the_checkpoint_module_reads_meta_json() -> None:
    assert raw_meta_readers() == ["napari_ssl/checkpoint.py"]


def test_the_check_sees_a_raw_reader() -> None:
    assert reads_raw_meta("from napari_ssl import checkpoint\nx = checkpoint._read_meta('m')['step']\n")
    assert reads_raw_meta("import json\nfrom napari_ssl.checkpoint import META_FILE\n"
                          "def f(p):\n    return json.loads((p / META_FILE).read_text())\n")
    assert reads_raw_meta("import json\ndef f(p):\n    return json.load(open(p / 'meta.json'))\n")
    assert not reads_raw_meta('"""Reads meta.json."""\nimport json\nx = json.loads("{}")\n')
    assert reads_raw_meta("from napari_ssl.checkpoint import read_meta\n")
    # a MONAI bundle's parser has a read_meta of its own (it reads configs/metadata.json): not ours
    assert not reads_raw_meta("def f(parser, root):\n    parser.read_meta(str(root / 'configs' / 'metadata.json'))\n")
