"""Shared by the study folders' tests: import a study script from its file."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def import_script(path: Path) -> ModuleType:
    """The Python script at ``path`` as a module (a study folder is not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def study_script(request: pytest.FixtureRequest) -> Callable[[str], ModuleType]:
    """``study_script("name.py")``: that script of the requesting test's folder, imported."""
    folder = Path(request.path).parent
    return lambda name: import_script(folder / name)
