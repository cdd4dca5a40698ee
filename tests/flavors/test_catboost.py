"""CatBoost models saved as CBM load in a fresh process and answer exactly as CatBoost does.

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

catboost = pytest.importorskip("catboost")

import httpx  # noqa: E402

import modelpack  # noqa: E402
from modelpack.convert import to_onnx  # noqa: E402
from modelpack.descriptor import Descriptor  # noqa: E402
from modelpack.errors import ConversionError, InvalidModelError, SignatureError  # noqa: E402
from modelpack.flavors import catboost as cb_flavor  # noqa: E402
from modelpack.testing import check_flavor  # noqa: E402

N_ROWS = 300
# Small and quiet: one thread, and no catboost_info directory written beside the tests.
FAST = {"iterations": 20, "thread_count": 1, "allow_writing_files": False, "verbose": False}


def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    colour = np.array(["red", "green", "blue", "grey"])[rng.integers(0, 4, N_ROWS)]
    frame = pd.DataFrame(
        {"a": rng.normal(size=N_ROWS), "b": rng.normal(size=N_ROWS), "colour": colour}
    )
    frame.loc[::7, "a"] = np.nan  # row 0 too: the input example shows missing values
    score = frame["a"].fillna(0) + 0.5 * frame["b"] + (frame["colour"] == "red") * 1.5
    binary = (score > 0.4).to_numpy(dtype=int)
    multi = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    target = score.to_numpy() + rng.normal(scale=0.1, size=N_ROWS)
    return frame, binary, multi, target


FRAME, BINARY, MULTI, TARGET = _data()
NUMBERS = FRAME[["a", "b"]].to_numpy()  # NaN included
NUMERIC = FRAME[["a", "b"]]
WORDS = np.array(["low", "mid", "high"])
GROUPS = np.repeat(np.arange(N_ROWS // 10), 10)


def _cats(data: Any) -> list[str] | None:
    return ["colour"] if isinstance(data, pd.DataFrame) and "colour" in data else None


def _classifier(labels: Any, data: Any = FRAME) -> Any:
    return catboost.CatBoostClassifier(cat_features=_cats(data), **FAST).fit(data, labels)


def _regressor(data: Any = FRAME) -> Any:
    return catboost.CatBoostRegressor(cat_features=_cats(data), **FAST).fit(data, TARGET)


def _ranker() -> Any:
    model = catboost.CatBoostRanker(cat_features=["colour"], **FAST)
    return model.fit(FRAME, MULTI, group_id=GROUPS)


def _native() -> Any:
    pool = catboost.Pool(FRAME, BINARY, cat_features=["colour"])
    return catboost.CatBoost({"loss_function": "Logloss", **FAST}).fit(pool)


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
        return model.predict(data, prediction_type="RawFormulaVal")
    return getattr(model, method)(data)


def _plain(values: Any) -> np.ndarray:
    # String labels come back as an object array, which np.save refuses without pickle.
    array = np.asarray(values)
    return array.astype(str) if array.dtype == object else array


METHODS = ("predict", "predict_proba", "predict_raw")
CASES = [
    *(Case(f"binary-frame-{m}", lambda: _classifier(BINARY), FRAME, m) for m in METHODS),
    *(Case(f"multiclass-frame-{m}", lambda: _classifier(MULTI), FRAME, m) for m in METHODS),
    Case("binary-string-labels", lambda: _classifier(np.array(["no", "yes"])[BINARY]), FRAME),
    Case("multiclass-string-labels", lambda: _classifier(WORDS[MULTI]), FRAME),
    Case("multiclass-numpy", lambda: _classifier(MULTI, NUMBERS), NUMBERS, "predict_proba"),
    Case("regressor-frame", _regressor, FRAME),
    Case("regressor-numpy", lambda: _regressor(NUMBERS), NUMBERS),
    Case("ranker", _ranker, FRAME),
    Case("native", _native, FRAME),
    Case("native-raw", _native, FRAME, "predict_raw"),
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
    result = np.asarray(modelpack.load(entry["path"]).predict(data))
    result = result.astype(str) if result.dtype == object else result
    np.save(root / f"{entry['id']}.out.npy", result, allow_pickle=False)
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
    root = tmp_path_factory.mktemp("catboost-zoo")
    manifest = []
    for case in CASES:
        model = case.fit()
        case.expected = _plain(_reference(model, case.inputs, case.method))
        case.path = cb_flavor.save(
            model, root / case.id, predict_method=case.method, input_example=case.inputs[:5]
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
def test_fresh_process_answers_exactly_as_catboost(zoo: dict[str, Case], case_id: str) -> None:
    case = zoo[case_id]
    assert case.got.shape == case.expected.shape
    assert np.array_equal(case.got, case.expected), case_id


def test_config_records_what_rebuilds_the_model(zoo: dict[str, Case]) -> None:
    config = Descriptor.read(zoo["multiclass-frame-predict"].path).flavors["catboost"]
    assert config["model_class"] == "CatBoostClassifier"
    assert config["file"] == "model.cbm" and config["format"] == "cbm"
    assert config["classes"] == [0, 1, 2]
    assert config["loss_function"] == "MultiClass"
    assert config["feature_names"] == ["a", "b", "colour"]
    assert config["cat_features"] == ["colour"] and config["cat_feature_indices"] == [2]
    assert config["catboost_version"] == catboost.__version__
    words = Descriptor.read(zoo["multiclass-string-labels"].path).flavors["catboost"]
    assert sorted(words["classes"]) == sorted(WORDS.tolist())
    native = Descriptor.read(zoo["native"].path).flavors["catboost"]
    assert native["model_class"] == "CatBoost" and "classes" not in native
    numbers = Descriptor.read(zoo["regressor-numpy"].path).flavors["catboost"]
    assert numbers["cat_features"] == [] and numbers["feature_names"] == ["0", "1"]


def test_signature_allows_missing_values_where_the_example_had_them(zoo: dict[str, Case]) -> None:
    signature = Descriptor.read(zoo["regressor-frame"].path).signature
    assert signature is not None
    columns = {c["name"]: c for c in signature["inputs"]["columns"]}
    assert columns["a"]["allow_missing"] is True
    assert columns["b"]["allow_missing"] is False
    model = modelpack.load(zoo["regressor-frame"].path)
    with pytest.raises(SignatureError, match="column 'b': missing"):
        model.predict(FRAME.head(3).assign(b=np.nan))


def test_load_returns_the_class_that_was_saved(zoo: dict[str, Case]) -> None:
    native = cb_flavor.load(zoo["binary-frame-predict"].path)
    assert type(native) is catboost.CatBoostClassifier
    assert np.array_equal(native.predict_proba(FRAME), zoo["binary-frame-predict_proba"].expected)
    assert type(cb_flavor.load(zoo["ranker"].path)) is catboost.CatBoostRanker
    assert type(cb_flavor.load(zoo["regressor-frame"].path)) is catboost.CatBoostRegressor
    assert type(cb_flavor.load(zoo["native"].path)) is catboost.CatBoost


def test_no_pickle_in_the_saved_directory(zoo: dict[str, Case]) -> None:
    for case in zoo.values():
        files = sorted(Descriptor.read(case.path).files)
        assert "model/model.cbm" in files
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".skops", ".joblib"))]
        text = (case.path / "modelpack.yaml").read_text()
        assert "!!python" not in text and "!!binary" not in text
        assert not list(case.path.rglob("catboost_info"))


def test_columns_in_another_order_answer_the_same(zoo: dict[str, Case]) -> None:
    # CatBoost itself reads a frame's columns by position; the predictor puts them in order.
    case = zoo["binary-frame-predict_proba"]
    rows = FRAME.head(20)[["colour", "b", "a"]]
    assert np.array_equal(modelpack.load(case.path).predict(rows), case.expected[:20])


def test_a_missing_category_is_a_signature_error(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["binary-frame-predict"].path)
    rows = FRAME.head(4).astype({"colour": object})
    rows.loc[2, "colour"] = None
    with pytest.raises(SignatureError, match="column 'colour': missing value at row 2"):
        model.predict(rows)


def test_bad_input_is_a_signature_error(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["binary-frame-predict"].path)
    with pytest.raises(SignatureError, match="missing required column 'b'"):
        model.predict(FRAME.drop(columns=["b"]))
    with pytest.raises(SignatureError, match="'a'"):
        model.predict(FRAME.assign(a="text"))
    tensor = modelpack.load(zoo["regressor-numpy"].path)
    with pytest.raises(SignatureError):
        tensor.predict(np.ones((3, 5)))


def test_save_picks_the_catboost_flavor_over_sklearn(tmp_path: Path) -> None:
    model = _classifier(BINARY, NUMBERS)
    path = modelpack.save(model, tmp_path / "m", input_example=NUMBERS[:3])
    assert Descriptor.read(path).loader == "catboost"


def test_what_cannot_be_saved_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="predict_method= one of 'predict', 'predict_raw'"):
        cb_flavor.save(_regressor(NUMBERS), tmp_path / "a", predict_method="predict_proba")
    with pytest.raises(InvalidModelError, match="not fitted"):
        cb_flavor.save(catboost.CatBoostClassifier(), tmp_path / "b")
    with pytest.raises(InvalidModelError, match="integer or string labels"):
        cb_flavor.save(_classifier(BINARY + 0.5, NUMBERS), tmp_path / "c")


@pytest.mark.parametrize("make", [lambda: _classifier(BINARY), _native])
def test_check_flavor(make: Callable[[], Any], tmp_path: Path) -> None:
    check_flavor("catboost", make(), FRAME.head(8), tmp_path)


def test_import_modelpack_imports_no_catboost() -> None:
    code = "import modelpack, sys; print('catboost' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


ONNX_CASES = [
    ("classifier-labels", lambda: _classifier(MULTI, NUMERIC), NUMERIC, "predict"),
    ("classifier-proba", lambda: _classifier(WORDS[MULTI], NUMERIC), NUMERIC, "predict_proba"),
    (
        "binary-labels",
        lambda: _classifier(np.array(["no", "yes"])[BINARY], NUMERIC),
        NUMERIC,
        "predict",
    ),
    ("regressor", lambda: _regressor(NUMERIC), NUMERIC, "predict"),
    ("regressor-numpy", lambda: _regressor(NUMBERS), NUMBERS, "predict_raw"),
    ("classifier-numpy", lambda: _classifier(BINARY, NUMBERS), NUMBERS, "predict_proba"),
]


@pytest.mark.parametrize(
    ("make", "data", "method"), [c[1:] for c in ONNX_CASES], ids=[c[0] for c in ONNX_CASES]
)
def test_onnx_conversion_passes_the_parity_gate(
    make: Callable[[], Any], data: Any, method: str, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    source = cb_flavor.save(make(), tmp_path / "m", predict_method=method, input_example=data[:20])
    converted = to_onnx(source)
    descriptor = Descriptor.read(converted)
    assert descriptor.loader == "catboost" and "onnx" in descriptor.flavors
    onnx_config = descriptor.flavors["onnx"]
    assert onnx_config["converter"]["tool"] == "catboost"
    assert onnx_config["ir_version"] >= 4  # constants as plain initializers (CatBoost writes 3)
    assert all(d["mismatched"] == 0 for d in onnx_config["parity"]["outputs"].values())
    expected = _plain(modelpack.load(source).predict(data))
    got = _plain(modelpack.load(converted, flavor="onnx").predict(data))
    assert got.shape == expected.shape
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    else:
        assert np.array_equal(got, expected)


def test_onnx_conversion_of_categorical_features_is_refused(zoo: dict[str, Case]) -> None:
    with pytest.raises(ConversionError, match="numeric features only.*'colour'"):
        to_onnx(zoo["binary-frame-predict"].path)


def test_onnx_conversion_of_raw_classifier_scores_is_refused(
    zoo: dict[str, Case], tmp_path: Path
) -> None:
    model = _classifier(BINARY, NUMBERS)
    path = cb_flavor.save(
        model, tmp_path / "m", predict_method="predict_raw", input_example=NUMBERS[:5]
    )
    with pytest.raises(ConversionError, match="labels and probabilities"):
        to_onnx(path)


def test_served_over_http_answers_the_same(zoo: dict[str, Case]) -> None:
    from tests.servers.conftest import serve

    case = zoo["binary-frame-predict_proba"]
    rows = FRAME.head(12)
    records = json.loads(rows.to_json(orient="split", index=False))
    with serve(case.path) as url:
        response = httpx.post(url + "/invocations", json={"dataframe_split": records}, timeout=30)
    assert response.status_code == 200, response.text
    got = np.asarray(response.json()["predictions"], dtype=case.expected.dtype)
    assert np.array_equal(got, case.expected[:12])
