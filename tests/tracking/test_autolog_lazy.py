"""``autolog()`` imports nothing: each integration switches on when its library is imported.

Each case runs in a fresh interpreter (what is imported, and when, is the point), against the
suite's isolated tracking home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")

HEAVY = ("sklearn", "xgboost", "lightgbm", "transformers", "torch")
DATA = """
import numpy as np
X = np.random.default_rng(0).normal(size=(120, 3))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
"""
REPORT = """
import json, sys
import modelpack
from modelpack import tracking
tracking.flush()
runs = modelpack.search_runs()
print(json.dumps({
    "runs": [
        {
            "name": r.name,
            "params": sorted(r.params),
            "artifacts": sorted(tracking.list_artifacts(r.id)),
        }
        for r in runs
    ],
    "hooked": any(type(f).__name__ == "AfterImport" for f in sys.meta_path),
}))
"""


def _fresh(home: Path, code: str) -> dict[str, Any]:
    env = {**os.environ, "MODELPACK_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_autolog_imports_none_of_the_libraries(home: Path) -> None:
    out = _fresh(
        home,
        "import json, sys, modelpack\nmodelpack.autolog()\n"
        f"print(json.dumps({{'imported': [m for m in {HEAVY!r} if m in sys.modules]}}))",
    )
    assert out == {"imported": []}


@pytest.mark.parametrize("sklearn_first", [False, True], ids=["xgboost-only", "sklearn-first"])
def test_xgboost_imported_after_autolog_logs_one_boosting_training(
    home: Path, sklearn_first: bool
) -> None:
    # scikit-learn imported (and its integration on) before XGBoost defines its wrappers: the
    # wrapper's fit is still one XGBoost training, with its importances, not a second run.
    first = "import sklearn.linear_model\n" if sklearn_first else ""
    code = first + "import modelpack\nmodelpack.autolog()\n" + DATA
    code += "import xgboost\nxgboost.XGBClassifier(n_estimators=4).fit(X, y)\n" + REPORT
    out = _fresh(home, code)
    [run] = out["runs"]
    assert run["name"] == "XGBClassifier"
    assert "n_estimators" in run["params"]
    assert "feature_importance_gain.json" in run["artifacts"]
    assert "model/modelpack.yaml" in run["artifacts"]
    assert out["hooked"]  # lightgbm and transformers still wait for their import


def test_lightgbm_and_sklearn_imported_after_autolog_are_logged(home: Path) -> None:
    code = "import modelpack\nmodelpack.autolog()\n" + DATA
    code += "import lightgbm\nlightgbm.LGBMClassifier(n_estimators=4, verbose=-1).fit(X, y)\n"
    code += "from sklearn.linear_model import LogisticRegression\nLogisticRegression().fit(X, y)\n"
    out = _fresh(home, code + REPORT)
    assert sorted(r["name"] for r in out["runs"]) == ["LGBMClassifier", "LogisticRegression"]
    lgbm = next(r for r in out["runs"] if r["name"] == "LGBMClassifier")
    assert "feature_importance_split.json" in lgbm["artifacts"]


def test_disabled_before_the_import_patches_nothing(home: Path) -> None:
    code = "import modelpack\nmodelpack.autolog()\nmodelpack.autolog(disable=True)\n" + DATA
    code += "import xgboost\nassert xgboost.train is xgboost.training.train\n"
    code += "assert not hasattr(xgboost.XGBModel.fit, '_modelpack_original')\n"
    code += "xgboost.XGBClassifier(n_estimators=2).fit(X, y)\n" + REPORT
    out = _fresh(home, code)
    assert out == {"runs": [], "hooked": False}


def test_transformers_waits_for_the_trainer(home: Path) -> None:
    pytest.importorskip("transformers")
    code = (
        "import json, sys, modelpack\nmodelpack.autolog()\nimport transformers\n"
        "before = 'torch' in sys.modules or 'transformers.trainer' in sys.modules\n"
        "from transformers import Trainer\n"
        "print(json.dumps({'before': before, "
        "'patched': hasattr(Trainer.__init__, '__wrapped__')}))"
    )
    assert _fresh(home, code) == {"before": False, "patched": True}
