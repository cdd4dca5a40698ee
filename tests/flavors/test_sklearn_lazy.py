"""Loading a scikit-learn model imports what the model needs, and skops decides as it always did.

The sklearn flavor imports skops without the sweeps its import makes (every scikit-learn module
for the estimator list, scipy's ufuncs looked for in every module): each case loads in a fresh
interpreter and reports what it imported. The trust decisions stay exactly skops' own: the
needs modelpack reports, and what skops itself answers when called directly afterwards, are
compared with an interpreter where skops was imported as it comes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

import modelpack
from modelpack.trust import TrustNeededWarning
from tests.flavors.sklearn_models import MeanRegressor
from tests.models import iris_like

ROOT = Path(__file__).resolve().parents[2]
# What skops' import-time sweep (all_estimators) brings in and a LogisticRegression never needs.
SWEEP_ONLY = (
    "pytest",
    "sklearn.utils._testing",
    "sklearn.ensemble",
    "sklearn.gaussian_process",
    "sklearn.semi_supervised",
    "sklearn.neural_network",
    "sklearn.mixture",
    "sklearn.naive_bayes",
    "sklearn.impute",
)

LOAD = """
import json, sys
import numpy as np
import modelpack
path, rows = sys.argv[1], json.loads(sys.argv[2])
model = modelpack.load(path)
example = model.input_example()
got = model.predict(example if example is not None else np.asarray(rows))
print(json.dumps({"predictions": np.asarray(got).tolist(), "modules": sorted(sys.modules)}))
"""

# modelpack's needs for each file, then skops called directly, then skops' default lists.
MODELPACK_THEN_SKOPS = """
import json, sys
from modelpack.model import untrusted_needs
paths = json.loads(sys.argv[1])
needs = {k: [n.name for n in untrusted_needs(p)[2]] for k, p in paths.items()}
import skops.io, skops.io._trusted_types as defaults
direct = {k: skops.io.get_untrusted_types(file=p + "/model/model.skops") for k, p in paths.items()}
print(json.dumps({"needs": needs, "direct": direct, "lists": LISTS}))
"""
SKOPS_ALONE = """
import json, sys
import skops.io, skops.io._trusted_types as defaults
from modelpack.flavors.sklearn import _need
from modelpack.trust import needing_trust
paths = json.loads(sys.argv[1])
direct = {k: skops.io.get_untrusted_types(file=p + "/model/model.skops") for k, p in paths.items()}
needs = {k: [n.name for n in needing_trust(map(_need, v))] for k, v in direct.items()}
print(json.dumps({"needs": needs, "direct": direct, "lists": LISTS}))
"""
LISTS = (
    "{a: sorted(set(getattr(defaults, a))) for a in ('SKLEARN_ESTIMATOR_TYPE_NAMES', "
    "'SKLEARN_INTERNAL_TYPE_NAMES', 'SCIPY_UFUNC_TYPE_NAMES', 'NUMPY_UFUNC_TYPE_NAMES')}"
)


def _run(code: str, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_TRUST")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lazy")
    frame, target = iris_like()
    numbers = frame[["length", "width", "count"]]
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 4, 80), rng.normal(size=80)])
    y = (X[:, 0] > 1).astype(int)
    fitted = {
        "logreg": (LogisticRegression().fit(numbers, target), numbers.head(3)),
        "tree": (DecisionTreeClassifier(max_depth=3).fit(numbers, target), numbers.head(3)),
        "hgb": (
            HistGradientBoostingClassifier(categorical_features=[0], max_iter=5).fit(X, y),
            X[:3],
        ),
        "custom": (MeanRegressor().fit(X, y.astype(float)), None),
    }
    out: dict[str, Any] = {}
    for name, (estimator, example) in fitted.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrustNeededWarning)  # the custom one: by design
            path = modelpack.save(estimator, root / name, input_example=example)
        rows = np.asarray(example if example is not None else X[:3])
        out[name] = (path, rows, estimator.predict(example if example is not None else X[:3]))
    return out


def test_a_logistic_regression_loads_without_the_rest_of_scikit_learn(models):
    path, rows, expected = models["logreg"]
    got = _run(LOAD, str(path), json.dumps(rows.tolist()))
    assert got["predictions"] == expected.tolist()
    imported = set(got["modules"])
    assert "skops.io" in imported and "sklearn.linear_model._logistic" in imported
    assert sorted(imported & set(SWEEP_ONLY)) == []
    assert "torch" not in imported


def test_a_model_with_an_internal_type_outside_the_estimators_loads_without_the_sweep(models):
    # HistGradientBoosting holds skops' internal _BinMapper (sklearn.ensemble): the flavor
    # completes that list, not the estimator list, and no trust is asked for.
    path, rows, expected = models["hgb"]
    got = _run(LOAD, str(path), json.dumps(rows.tolist()))
    assert got["predictions"] == expected.tolist()
    imported = set(got["modules"])
    assert "sklearn.ensemble" in imported
    assert sorted({"pytest", "sklearn.utils._testing", "sklearn.gaussian_process"} & imported) == []


def test_needs_and_skops_own_answers_are_those_of_skops_imported_as_it_comes(models):
    paths = json.dumps({name: str(models[name][0]) for name in models})
    ours = _run(MODELPACK_THEN_SKOPS.replace("LISTS", LISTS), paths)
    alone = _run(SKOPS_ALONE.replace("LISTS", LISTS), paths)
    assert ours["needs"] == alone["needs"]
    assert ours["needs"]["custom"] == ["tests.flavors.sklearn_models.MeanRegressor"]
    assert not any(ours["needs"][name] for name in ("logreg", "tree", "hgb"))
    # skops called directly after modelpack's loads: its full lists, its own answers
    assert ours["direct"] == alone["direct"]
    assert ours["lists"] == alone["lists"]
    assert len(ours["lists"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]) > 150
    assert ours["lists"]["SCIPY_UFUNC_TYPE_NAMES"]


# The shortcut relies on skops' internals; when they are not what it expects (another skops
# release), skops is imported as it comes: the model still loads, with skops' full lists.
UNEXPECTED_SKOPS = """
import json, sys
from modelpack.flavors import _skops
def unexpected(attr):
    raise AttributeError(f"skops.io._trusted_types has no {attr}")
_skops._make_lazy = unexpected
import modelpack
model = modelpack.load(sys.argv[1])
got = model.predict(model.input_example())
import skops.io._trusted_types as defaults
print(json.dumps({"predictions": got.tolist(), "level": _skops._level,
                  "estimators": len(defaults.SKLEARN_ESTIMATOR_TYPE_NAMES)}))
"""


def test_an_unexpected_skops_is_imported_as_it_comes(models):
    path, _, expected = models["logreg"]
    got = _run(UNEXPECTED_SKOPS, str(path))
    assert got["predictions"] == expected.tolist()
    assert got["level"] == 2  # _FULL: skops' own lists, nothing shortened
    assert got["estimators"] > 150
