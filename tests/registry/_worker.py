"""Subprocess helpers: `python -m tests.registry._worker MODE MODEL_DIR NAME [COUNT]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from modelpack import artifacts, registry
from modelpack.registry import _sql


def _hang_after_first(marker: Path, original):
    def patched(*args, **kwargs):
        result = original(*args, **kwargs)
        marker.write_text("ready")
        time.sleep(600)  # the test kills us here
        return result

    return patched


def main() -> None:
    mode, model_dir, name = sys.argv[1:4]
    if mode == "register":
        for _ in range(int(sys.argv[4])):
            print(registry.register(name, model_dir).version, flush=True)
    elif mode == "hang-upload":
        store = artifacts.LocalArtifactStore
        store.put_file = _hang_after_first(Path(sys.argv[4]), store.put_file)  # type: ignore[method-assign]
        registry.register(name, model_dir)
    elif mode == "hang-insert":
        # _insert_version runs inside the register transaction; hang once the row is written.
        _sql._insert_version = _hang_after_first(Path(sys.argv[4]), _sql._insert_version)
        registry.register(name, model_dir)


if __name__ == "__main__":
    main()
