"""lean_startup: what a server that owns its process does while a model's libraries import."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import Any

import pytest

from modelpack import _startup


def _watches_scipy(finder: object) -> bool:
    return _startup._SCIPY_ARRAY_API in getattr(finder, "callbacks", {})


def _fresh(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


SCIPY_AFTER = """
import gc, json, sys
import scipy.stats as st
from scipy._lib import _array_api
out = {
    "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "finders": [type(f).__name__ for f in sys.meta_path],
    "doc": st.zscore.__doc__,
    "zscore": st.zscore([1.0, 2.0, 3.0]).tolist(),
    "marked": st.zscore in _array_api.xp_capabilities_table,
}
print(json.dumps(out))
"""


def test_scipy_imported_during_start_up_keeps_its_docstrings_as_written_and_works():
    lean = _fresh(
        "from modelpack._startup import lean_startup\n"
        "with lean_startup():\n    import scipy.stats\n" + SCIPY_AFTER
    )
    plain = _fresh(SCIPY_AFTER)
    table = "Array API Standard Support"
    assert table in plain["doc"] and table not in lean["doc"]
    # The docstring as written: what numpydoc's rewrite starts from.
    assert lean["doc"].startswith("Compute the z score.")
    assert plain["doc"].split("Parameters")[0].split() == lean["doc"].split("Parameters")[0].split()
    assert lean["zscore"] == plain["zscore"]
    assert lean["marked"] and plain["marked"]  # the decorator's capability table is kept
    # After the block: the collector runs again, what start-up made is frozen, no finder left.
    assert lean["enabled"] and plain["enabled"]
    assert lean["frozen"] > 10_000 and plain["frozen"] == 0
    assert "AfterImport" not in lean["finders"]


def test_scipy_imported_after_start_up_is_as_it_comes():
    after = _fresh(
        "from modelpack._startup import lean_startup\n"
        "with lean_startup():\n    import json\n" + SCIPY_AFTER
    )
    assert "Array API Standard Support" in after["doc"]


def test_a_failed_start_up_resumes_the_collector_without_freezing():
    import gc

    assert gc.isenabled()
    before = gc.get_freeze_count()
    with pytest.raises(RuntimeError), _startup.lean_startup():
        assert not gc.isenabled()
        assert any(_watches_scipy(f) for f in sys.meta_path)
        raise RuntimeError("the model failed to load")
    assert gc.isenabled()
    assert gc.get_freeze_count() == before
    assert not any(_watches_scipy(f) for f in sys.meta_path)


def test_nested_and_a_collector_the_process_turned_off_stay_as_they_were():
    import gc

    gc.disable()
    try:
        with _startup.lean_startup(), _startup.lean_startup():
            pass
        assert not gc.isenabled()  # the process had turned it off: left off, nothing frozen
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()
    with pytest.raises(KeyError), _startup.lean_startup():
        with _startup.lean_startup():
            pass
        assert not gc.isenabled()  # the outer block is still open
        raise KeyError("outer")
    assert gc.isenabled()


def test_a_module_without_the_decorator_is_left_alone():
    module: Any = types.ModuleType("scipy._lib._array_api")
    module.FunctionDoc = object
    _startup._keep_docs(module)
    assert module.FunctionDoc is object


def test_each_effect_only_where_asked():
    import gc

    with _startup.lean_startup(collector=False):  # where models come and go
        assert gc.isenabled()
        assert any(_watches_scipy(f) for f in sys.meta_path)
    assert gc.get_freeze_count() == 0
    with _startup.lean_startup(docs=False):  # someone else's process that asked for a freeze
        assert not gc.isenabled()
        assert not any(_watches_scipy(f) for f in sys.meta_path)
        try:
            raise ValueError
        except ValueError:
            pass
    try:
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
