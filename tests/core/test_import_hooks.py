"""AfterImport: a callback once a watched module's own code has run, whoever imports it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from modelpack._import_hooks import AfterImport


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = tmp_path / "hooked_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("VALUE = 1\n")
    (root / "data.txt").write_text("resource\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "hooked_pkg"
    sys.modules.pop("hooked_pkg", None)


def test_the_callback_sees_the_executed_module_and_the_module_stays_itself(package: str) -> None:
    import importlib
    import importlib.resources

    seen: list[ModuleType] = []
    hooks = AfterImport({package: seen.append})
    hooks.install()
    try:
        module = importlib.import_module(package)
    finally:
        hooks.remove()
    assert seen == [module] and module.VALUE == 1
    # Found by the path finder as without the hook: its files are still its resources.
    assert importlib.resources.files(package).joinpath("data.txt").read_text() == "resource\n"
    assert module.__spec__ is not None and module.__spec__.origin is not None
    assert hooks not in sys.meta_path


def test_a_failing_callback_is_logged_and_the_import_goes_on(
    package: str, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib

    def broken(module: ModuleType) -> None:
        raise RuntimeError("integration broke")

    hooks = AfterImport({package: broken})
    hooks.install()
    try:
        with caplog.at_level(logging.WARNING, logger="modelpack"):
            module = importlib.import_module(package)
    finally:
        hooks.remove()
    assert module.VALUE == 1
    assert "after importing hooked_pkg: RuntimeError: integration broke" in caplog.text


def test_modules_it_does_not_watch_are_left_to_the_other_finders(package: str) -> None:
    import importlib

    hooks = AfterImport({"something_else": lambda m: None})
    assert hooks.find_spec(package, None) is None
    hooks.install()
    try:
        module = importlib.import_module(package)
    finally:
        hooks.remove()
    assert module.__spec__ is not None
    assert not hasattr(module.__spec__.loader, "_callback")
