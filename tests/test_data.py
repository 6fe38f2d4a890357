"""Tests for the package xmlc.data as a whole: its public names. Each module has its own file:
test_container, test_xmc, test_tables, test_synthetic, test_loader, test_split, test_load."""

import ast
from pathlib import Path

import xmlc.data

PACKAGE = Path(xmlc.data.__file__).parent


def test_public_names_are_re_exported():
    from xmlc.data import (  # noqa: F401
        SYNTHETIC_PRESETS, Batch, DataFileError, SparseDataset, XMCData, check_labelled, concat_data, load_splits,
        make_loader, normalize_rows, read_data, read_xmc, stratified_split, synthetic, synthetic_preset, tables,
        write_xmc,
    )
    from xmlc.data.container import XMCData as Container
    from xmlc.errors import DataFileError as Error

    assert XMCData is Container and DataFileError is Error
    assert all(hasattr(xmlc.data, name) for name in xmlc.data.__all__)


def test_modules_import_their_siblings_not_the_package():
    # through __init__ a module would import itself in a circle; nothing imports lazily either
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if path.name != "__init__.py":
                    assert module != "xmlc.data", f"{path.name}:{node.lineno} imports the package"
                if (module or "").startswith("xmlc"):
                    assert id(node) in top_level, f"{path.name}:{node.lineno}: a lazy import of {module}"
