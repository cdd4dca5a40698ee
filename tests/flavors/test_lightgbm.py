"""LightGBM models saved as text load in a fresh process and answer exactly as LightGBM does.

Every case is fitted and saved once per module; ONE fresh interpreter loads them all with
``modelpack.load`` (no trust) and predicts, and each case compares with the in-process model,
a scikit-learn wrapper's ``predict``/``predict_proba`` included (the loaded model is a Booster).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

lightgbm = pytest.importorskip("lightgbm")

import httpx  # noqa: E402

import modelpack  # noqa: E402
from modelpack.descriptor import Descriptor  # noqa: E402
from modelpack.errors import InvalidModelError, SignatureError  # noqa: E402
from modelpack.flavors import lightgbm as lgb_flavor  # noqa: E402
from modelpack.testing import check_flavor  # noqa: E402

N_ROWS = 300
TREES = 20


def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    colour = np.array(["red", "green", "blue", "grey"])[rng.integers(0, 4, N_ROWS)]
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=N_ROWS),
            "b": rng.normal(size=N_ROWS),
            "colour": pd.Categorical(colour, categories=["blue", "green", "grey", "red"]),
        }
    )
    frame.loc[::7, "a"] = np.nan  # row 0 too: the input example shows missing values
    frame.loc[3::11, "colour"] = np.nan
    score = frame["a"].fillna(0) + 0.5 * frame["b"] + (frame["colour"] == "red") * 1.5
    binary = (score > 0.4).to_numpy(dtype=int)
    multi = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    target = score.to_numpy() + rng.normal(scale=0.1, size=N_ROWS)
    return frame, binary, multi, target


FRAME, BINARY, MULTI, TARGET = _data()
NUMBERS = FRAME[["a", "b"]].to_numpy()  # NaN included
LABELS = np.array(["no", "yes", "maybe"])
QID = np.repeat(np.arange(N_ROWS // 10), 10)


def _lgbm(cls: Any, **kw: Any) -> Any:
    return cls(n_estimators=TREES, num_leaves=7, min_child_samples=5, verbose=-1, **kw)


def _booster() -> Any:
    params = {"objective": "regression", "num_leaves": 7, "verbose": -1}
    return lightgbm.train(params, lightgbm.Dataset(FRAME, label=TARGET), num_boost_round=TREES)


def _early_stopped() -> Any:
    model = _lgbm(lightgbm.LGBMClassifier, learning_rate=0.5)
    model.set_params(n_estimators=200)
    stop = [lightgbm.early_stopping(3, verbose=False)]
    held_out = (FRAME[200:], BINARY[200:])
    # LightGBM 4.7 renamed eval_set (now deprecated) to eval_X/eval_y.
    if "eval_X" in inspect.signature(model.fit).parameters:
        evals: dict[str, Any] = {"eval_X": (held_out[0],), "eval_y": (held_out[1],)}
    else:
        evals = {"eval_set": [held_out]}
    return model.fit(FRAME[:200], BINARY[:200], callbacks=stop, **evals)


@dataclass
class Case:
    id: str
    fit: Callable[[], Any]
    inputs: Any
    method: str = "predict"
    expected: Any = None
    path: Path = Path()  # set once saved
    got: Any = None


def _reference(model: Any, data: Any, method: str) -> Any:
    if method == "predict_raw":
        return model.predict(data, raw_score=True)
    return getattr(model, method)(data)


def _classifier(labels: Any) -> Callable[[], Any]:
    return lambda: _lgbm(lightgbm.LGBMClassifier).fit(FRAME, labels)


METHODS = ("predict", "predict_proba", "predict_raw")
CASES = [
    *(Case(f"binary-int-{m}", _classifier(BINARY), FRAME, m) for m in METHODS),
    *(Case(f"binary-str-{m}", _classifier(LABELS[BINARY]), FRAME, m) for m in METHODS),
    *(Case(f"multiclass-str-{m}", _classifier(LABELS[MULTI]), FRAME, m) for m in METHODS),
    Case(
        "multiclass-numpy",
        lambda: _lgbm(lightgbm.LGBMClassifier).fit(NUMBERS, MULTI),
        NUMBERS,
        "predict",
    ),
    Case("regressor-frame", lambda: _lgbm(lightgbm.LGBMRegressor).fit(FRAME, TARGET), FRAME),
    Case(
        "regressor-numpy",
        lambda: _lgbm(lightgbm.LGBMRegressor).fit(NUMBERS, TARGET),
        NUMBERS,
    ),
    Case(
        "ranker",
        lambda: _lgbm(lightgbm.LGBMRanker).fit(FRAME, MULTI, group=[10] * (N_ROWS // 10)),
        FRAME,
    ),
    Case("booster", _booster, FRAME),
    Case("booster-raw", _booster, FRAME, "predict_raw"),
    Case("early-stopped", _early_stopped, FRAME, "predict_proba"),
]

_LOADER = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
import modelpack

root = Path(sys.argv[1])
for entry in json.loads((root / "manifest.json").read_text()):
    file = root / entry["inputs"]
    data = pd.read_parquet(file) if file.suffix == ".parquet" else np.load(file)
    result = modelpack.load(entry["path"]).predict(data)
    np.save(root / f"{entry['id']}.out.npy", np.asarray(result), allow_pickle=False)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("sklearn", "pickle", "skops"))
print(json.dumps(loaded))
"""


def _write(data: Any, stem: Path) -> str:
    if isinstance(data, pd.DataFrame):
        data.to_parquet(stem.with_suffix(".parquet"))
        return stem.with_suffix(".parquet").name
    np.save(stem.with_suffix(".npy"), data, allow_pickle=False)
    return stem.with_suffix(".npy").name


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("lightgbm-zoo")
    manifest = []
    for case in CASES:
        model = case.fit()
        case.expected = np.asarray(_reference(model, case.inputs, case.method))
        example = case.inputs[:5]
        case.path = lgb_flavor.save(
            model, root / case.id, predict_method=case.method, input_example=example
        )
        inputs = _write(case.inputs, root / case.id)
        manifest.append({"id": case.id, "path": str(case.path), "inputs": inputs})
    (root / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_TRUST")}
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for case in CASES:
        case.got = np.load(root / f"{case.id}.out.npy", allow_pickle=False)
    return {c.id: c for c in CASES}


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_fresh_process_answers_exactly_as_lightgbm(zoo: dict[str, Case], case_id: str) -> None:
    case = zoo[case_id]
    assert case.got.shape == case.expected.shape
    assert case.got.dtype.kind == case.expected.dtype.kind
    assert np.array_equal(case.got, case.expected), case_id


def test_config_records_what_rebuilds_the_wrapper(zoo: dict[str, Case]) -> None:
    config = Descriptor.read(zoo["multiclass-str-predict"].path).flavors["lightgbm"]
    assert config["wrapper"] == "LGBMClassifier"
    assert config["classes"] == ["maybe", "no", "yes"] and config["n_classes"] == 3
    assert config["objective"] == "multiclass"
    assert config["feature_names"] == ["a", "b", "colour"]
    assert config["categories"] == {"colour": ["blue", "green", "grey", "red"]}
    assert config["best_iteration"] is None
    stopped = Descriptor.read(zoo["early-stopped"].path).flavors["lightgbm"]
    assert stopped["best_iteration"] == _early_stopped().best_iteration_
    booster = Descriptor.read(zoo["booster"].path).flavors["lightgbm"]
    assert booster["wrapper"] is None and booster["objective"] == "regression"


def test_signature_allows_missing_values_where_the_example_had_them(zoo: dict[str, Case]) -> None:
    signature = Descriptor.read(zoo["booster"].path).signature
    assert signature is not None
    columns = {c["name"]: c for c in signature["inputs"]["columns"]}
    assert columns["a"]["allow_missing"] is True
    assert columns["b"]["allow_missing"] is False
    assert columns["colour"]["allow_missing"] is True


def test_load_returns_a_booster_that_answers_as_the_wrapper(zoo: dict[str, Case]) -> None:
    native = lgb_flavor.load(zoo["binary-int-predict_raw"].path)
    assert isinstance(native, lightgbm.Booster)
    assert np.array_equal(
        native.predict(FRAME, raw_score=True), zoo["binary-int-predict_raw"].expected
    )


def test_no_pickle_in_the_saved_directory(zoo: dict[str, Case]) -> None:
    for case in zoo.values():
        files = sorted(Descriptor.read(case.path).files)
        assert "model/model.txt" in files
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".skops", ".joblib"))]
        text = (case.path / "modelpack.yaml").read_text()
        assert "!!python" not in text and "!!binary" not in text


def test_category_values_arrive_as_plain_strings(zoo: dict[str, Case]) -> None:
    case = zoo["multiclass-str-predict_proba"]
    rows = FRAME.head(20).copy()
    rows["colour"] = rows["colour"].astype(object)  # as JSON or CSV would bring them
    got = modelpack.load(case.path).predict(rows)
    assert np.array_equal(got, case.expected[:20])


def test_bad_input_is_a_signature_error(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["binary-str-predict"].path)
    with pytest.raises(SignatureError, match="missing required column 'b'"):
        model.predict(FRAME.drop(columns=["b"]))
    with pytest.raises(SignatureError, match="'a'"):
        model.predict(FRAME.assign(a="text"))


def test_save_picks_the_lightgbm_flavor_over_sklearn(tmp_path: Path) -> None:
    model = _lgbm(lightgbm.LGBMClassifier).fit(NUMBERS, BINARY)
    path = modelpack.save(model, tmp_path / "m", input_example=NUMBERS[:3])
    assert Descriptor.read(path).loader == "lightgbm"


def test_labels_that_yaml_cannot_hold_are_refused(tmp_path: Path) -> None:
    model = _lgbm(lightgbm.LGBMClassifier).fit(NUMBERS, BINARY.astype(float))
    with pytest.raises(InvalidModelError, match="class label 0.0 .float. cannot be stored"):
        lgb_flavor.save(model, tmp_path / "m")


@pytest.mark.parametrize("make", [_classifier(LABELS[MULTI]), _booster])
def test_check_flavor(make: Callable[[], Any], tmp_path: Path) -> None:
    check_flavor("lightgbm", make(), FRAME.head(8), tmp_path)


def test_import_modelpack_imports_no_lightgbm() -> None:
    code = "import modelpack, sys; print('lightgbm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_served_over_http_answers_the_same(zoo: dict[str, Case]) -> None:
    from tests.servers.conftest import serve

    case = zoo["multiclass-str-predict"]
    rows = FRAME.head(12)
    records = json.loads(rows.astype({"colour": object}).to_json(orient="split", index=False))
    with serve(case.path) as url:
        response = httpx.post(url + "/invocations", json={"dataframe_split": records}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == case.expected[:12].tolist()


# ONNX export (onnxmltools): the parity gate with the default tolerances, then one served answer.
def _plain() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=N_ROWS), "b": rng.normal(size=N_ROWS)})
    frame["n"] = np.arange(N_ROWS) % 5
    frame.loc[::7, "a"] = np.nan
    score = frame["a"].fillna(0) + 0.5 * frame["b"] + 0.2 * frame["n"]
    multi = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return frame, (score > 0.4).to_numpy(dtype=int), multi, score.to_numpy()


PLAIN, PLAIN_BINARY, PLAIN_MULTI, PLAIN_TARGET = _plain()
WORDS = np.array(["low", "mid", "high"])[PLAIN_MULTI]


ONNX_CASES = [
    *(
        (f"binary-{m}", lambda: _lgbm(lightgbm.LGBMClassifier).fit(PLAIN, PLAIN_BINARY), m)
        for m in ("predict", "predict_proba", "predict_raw")
    ),
    *(
        (f"multiclass-{m}", lambda: _lgbm(lightgbm.LGBMClassifier).fit(PLAIN, PLAIN_MULTI), m)
        for m in ("predict", "predict_proba", "predict_raw")
    ),
    ("string-labels", lambda: _lgbm(lightgbm.LGBMClassifier).fit(PLAIN, WORDS), "predict"),
    ("regressor", lambda: _lgbm(lightgbm.LGBMRegressor).fit(PLAIN, PLAIN_TARGET), "predict"),
    (
        "booster-binary",
        lambda: lightgbm.train(
            {"objective": "binary", "verbose": -1}, lightgbm.Dataset(PLAIN, PLAIN_BINARY), TREES
        ),
        "predict",
    ),
]


@pytest.mark.parametrize(("case_id", "fit", "method"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_conversion_passes_the_parity_gate(
    case_id: str, fit: Callable[[], Any], method: str, tmp_path: Path
) -> None:
    from modelpack.convert import to_onnx

    model = fit()
    source = lgb_flavor.save(model, tmp_path / "m", predict_method=method, input_example=PLAIN[:5])
    out = to_onnx(source)
    config = Descriptor.read(out).flavors["onnx"]
    assert config["converter"]["tool"] == "onnxmltools"
    assert all(d["mismatched"] == 0 for d in config["parity"]["outputs"].values())
    expected = np.asarray(modelpack.load(source).predict(PLAIN))
    got = np.asarray(modelpack.load(out, flavor="onnx").predict(PLAIN))
    assert got.shape == expected.shape
    if expected.dtype.kind in "iUO":
        assert got.tolist() == expected.tolist()
    else:
        assert got.dtype == np.float64  # as LightGBM answers
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_onnx_refuses_raw_scores_it_cannot_produce(tmp_path: Path) -> None:
    from modelpack.convert import to_onnx
    from modelpack.errors import ConversionError

    model = _lgbm(lightgbm.LGBMRegressor, objective="poisson").fit(PLAIN, np.abs(PLAIN_TARGET))
    path = lgb_flavor.save(
        model, tmp_path / "m", predict_method="predict_raw", input_example=PLAIN[:5]
    )
    with pytest.raises(ConversionError, match="raw scores.*poisson"):
        to_onnx(path)
