"""XGBoost models saved as UBJSON load in a fresh process and answer exactly as XGBoost does.

Every case is fitted and saved once per module; ONE fresh interpreter loads them all with
``modelpack.load`` (no trust) and predicts, and each case compares with the in-process model.
"""

from __future__ import annotations

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

xgboost = pytest.importorskip("xgboost")

import httpx  # noqa: E402

import modelpack  # noqa: E402
from modelpack.descriptor import Descriptor  # noqa: E402
from modelpack.errors import InvalidModelError, SignatureError  # noqa: E402
from modelpack.flavors import xgboost as xgb_flavor  # noqa: E402
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
QID = np.repeat(np.arange(N_ROWS // 10), 10)


def _booster() -> Any:
    matrix = xgboost.DMatrix(FRAME, label=TARGET, enable_categorical=True)
    return xgboost.train({"max_depth": 3, "tree_method": "hist"}, matrix, num_boost_round=TREES)


def _early_stopped() -> Any:
    model = xgboost.XGBClassifier(
        n_estimators=200, early_stopping_rounds=3, enable_categorical=True, learning_rate=0.5
    )
    return model.fit(FRAME[:200], BINARY[:200], eval_set=[(FRAME[200:], BINARY[200:])])


def _cat(cls: Any, **kw: Any) -> Any:
    return cls(n_estimators=TREES, max_depth=3, enable_categorical=True, **kw)


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
    if isinstance(model, xgboost.Booster):
        matrix = xgboost.DMatrix(data, enable_categorical=True)
        return model.predict(matrix, output_margin=method == "predict_raw")
    if method == "predict_raw":
        return model.predict(data, output_margin=True)
    return getattr(model, method)(data)


CASES = [
    *(
        Case(f"binary-frame-{m}", lambda: _cat(xgboost.XGBClassifier).fit(FRAME, BINARY), FRAME, m)
        for m in ("predict", "predict_proba", "predict_raw")
    ),
    *(
        Case(
            f"multiclass-frame-{m}", lambda: _cat(xgboost.XGBClassifier).fit(FRAME, MULTI), FRAME, m
        )
        for m in ("predict", "predict_proba", "predict_raw")
    ),
    Case(
        "multiclass-numpy",
        lambda: xgboost.XGBClassifier(n_estimators=TREES).fit(NUMBERS, MULTI),
        NUMBERS,
        "predict_proba",
    ),
    Case("regressor-frame", lambda: _cat(xgboost.XGBRegressor).fit(FRAME, TARGET), FRAME),
    Case(
        "regressor-numpy",
        lambda: xgboost.XGBRegressor(n_estimators=TREES).fit(NUMBERS, TARGET),
        NUMBERS,
    ),
    Case(
        "random-forest",
        lambda: xgboost.XGBRFClassifier(n_estimators=TREES).fit(NUMBERS, BINARY),
        NUMBERS,
        "predict_proba",
    ),
    Case("ranker", lambda: _cat(xgboost.XGBRanker).fit(FRAME, MULTI, qid=QID), FRAME),
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
    root = tmp_path_factory.mktemp("xgboost-zoo")
    manifest = []
    for case in CASES:
        model = case.fit()
        case.expected = np.asarray(_reference(model, case.inputs, case.method))
        example = case.inputs[:5]
        case.path = xgb_flavor.save(
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
def test_fresh_process_answers_exactly_as_xgboost(zoo: dict[str, Case], case_id: str) -> None:
    case = zoo[case_id]
    assert case.got.shape == case.expected.shape
    assert np.array_equal(case.got, case.expected), case_id


def test_config_records_what_rebuilds_the_wrapper(zoo: dict[str, Case]) -> None:
    config = Descriptor.read(zoo["multiclass-frame-predict"].path).flavors["xgboost"]
    assert config["wrapper"] == "XGBClassifier"
    assert config["classes"] == [0, 1, 2] and config["n_classes"] == 3
    assert config["objective"] == "multi:softprob"
    assert config["feature_names"] == ["a", "b", "colour"]
    assert config["categories"] == {"colour": ["blue", "green", "grey", "red"]}
    assert config["best_iteration"] is None
    stopped = Descriptor.read(zoo["early-stopped"].path).flavors["xgboost"]
    assert stopped["best_iteration"] == _early_stopped().best_iteration
    booster = Descriptor.read(zoo["booster"].path).flavors["xgboost"]
    assert booster["wrapper"] is None and booster["objective"] == "reg:squarederror"


def test_signature_allows_missing_values_where_the_example_had_them(zoo: dict[str, Case]) -> None:
    signature = Descriptor.read(zoo["booster"].path).signature
    assert signature is not None
    columns = {c["name"]: c for c in signature["inputs"]["columns"]}
    assert columns["a"]["allow_missing"] is True
    assert columns["b"]["allow_missing"] is False
    assert columns["colour"]["allow_missing"] is True


def test_load_returns_the_wrapper_class_that_was_saved(zoo: dict[str, Case]) -> None:
    native = xgb_flavor.load(zoo["binary-frame-predict"].path)
    assert type(native) is xgboost.XGBClassifier
    assert np.array_equal(native.predict_proba(FRAME), zoo["binary-frame-predict_proba"].expected)
    assert type(xgb_flavor.load(zoo["ranker"].path)) is xgboost.XGBRanker
    assert isinstance(xgb_flavor.load(zoo["booster"].path), xgboost.Booster)


def test_no_pickle_in_the_saved_directory(zoo: dict[str, Case]) -> None:
    for case in zoo.values():
        files = sorted(Descriptor.read(case.path).files)
        assert "model/model.ubj" in files
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".skops", ".joblib"))]
        text = (case.path / "modelpack.yaml").read_text()
        assert "!!python" not in text and "!!binary" not in text


def test_category_values_arrive_as_plain_strings(zoo: dict[str, Case]) -> None:
    case = zoo["binary-frame-predict_proba"]
    rows = FRAME.head(20).copy()
    rows["colour"] = rows["colour"].astype(object)  # as JSON or CSV would bring them
    got = modelpack.load(case.path).predict(rows)
    assert np.array_equal(got, case.expected[:20])


def test_bad_input_is_a_signature_error(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["binary-frame-predict"].path)
    with pytest.raises(SignatureError, match="missing required column 'b'"):
        model.predict(FRAME.drop(columns=["b"]))
    with pytest.raises(SignatureError, match="'a'"):
        model.predict(FRAME.assign(a="text"))


def test_save_picks_the_xgboost_flavor_over_sklearn(tmp_path: Path) -> None:
    model = xgboost.XGBClassifier(n_estimators=3).fit(NUMBERS, BINARY)
    path = modelpack.save(model, tmp_path / "m", input_example=NUMBERS[:3])
    assert Descriptor.read(path).loader == "xgboost"


def test_predict_proba_is_refused_for_a_regressor(tmp_path: Path) -> None:
    model = xgboost.XGBRegressor(n_estimators=3).fit(NUMBERS, TARGET)
    with pytest.raises(InvalidModelError, match="predict_method= one of 'predict', 'predict_raw'"):
        xgb_flavor.save(model, tmp_path / "m", predict_method="predict_proba")


@pytest.mark.parametrize("make", [lambda: _cat(xgboost.XGBClassifier).fit(FRAME, BINARY), _booster])
def test_check_flavor(make: Callable[[], Any], tmp_path: Path) -> None:
    check_flavor("xgboost", make(), FRAME.head(8), tmp_path)


def test_import_modelpack_imports_no_xgboost() -> None:
    code = "import modelpack, sys; print('xgboost' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_served_over_http_answers_the_same(zoo: dict[str, Case]) -> None:
    from tests.servers.conftest import serve

    case = zoo["binary-frame-predict_proba"]
    rows = FRAME.head(12)
    records = json.loads(rows.astype({"colour": object}).to_json(orient="split", index=False))
    with serve(case.path) as url:
        response = httpx.post(url + "/invocations", json={"dataframe_split": records}, timeout=30)
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["predictions"], dtype=case.expected.dtype)
    assert np.array_equal(got, case.expected[:12])


# ONNX export (onnxmltools): the parity gate with the default tolerances, then one served answer.
PLAIN = FRAME[["a", "b"]].assign(n=np.arange(N_ROWS) % 5)  # numeric columns, NaN in "a"

ONNX_CASES = [
    *(
        (f"binary-{m}", lambda: xgboost.XGBClassifier(n_estimators=TREES).fit(PLAIN, BINARY), m)
        for m in ("predict", "predict_proba", "predict_raw")
    ),
    *(
        (f"multiclass-{m}", lambda: xgboost.XGBClassifier(n_estimators=TREES).fit(PLAIN, MULTI), m)
        for m in ("predict", "predict_proba", "predict_raw")
    ),
    ("regressor", lambda: xgboost.XGBRegressor(n_estimators=TREES).fit(PLAIN, TARGET), "predict"),
    (
        "booster-binary",
        lambda: xgboost.train(
            {"objective": "binary:logistic"}, xgboost.DMatrix(PLAIN, label=BINARY), TREES
        ),
        "predict",
    ),
    (
        "booster-multiclass-raw",
        lambda: xgboost.train(
            {"objective": "multi:softprob", "num_class": 3},
            xgboost.DMatrix(PLAIN, label=MULTI),
            TREES,
        ),
        "predict_raw",
    ),
]


@pytest.mark.parametrize(("case_id", "fit", "method"), ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_onnx_conversion_passes_the_parity_gate(
    case_id: str, fit: Callable[[], Any], method: str, tmp_path: Path
) -> None:
    from modelpack.convert import to_onnx

    model = fit()
    source = xgb_flavor.save(model, tmp_path / "m", predict_method=method, input_example=PLAIN[:5])
    out = to_onnx(source)
    config = Descriptor.read(out).flavors["onnx"]
    assert config["converter"]["tool"] == "onnxmltools"
    assert all(d["mismatched"] == 0 for d in config["parity"]["outputs"].values())
    expected = np.asarray(modelpack.load(source).predict(PLAIN))
    got = np.asarray(modelpack.load(out, flavor="onnx").predict(PLAIN))
    assert got.shape == expected.shape
    if method == "predict" and expected.dtype.kind == "i":
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_onnx_refuses_categorical_features(zoo: dict[str, Case]) -> None:
    from modelpack.convert import to_onnx
    from modelpack.errors import ConversionError

    path = zoo["binary-frame-predict"].path
    with pytest.raises(ConversionError, match=r"XGBClassifier \(xgboost\).*categorical.*colour"):
        to_onnx(path, path.parent / "refused")
