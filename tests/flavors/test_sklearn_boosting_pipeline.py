"""A Pipeline ending in an XGBoost, LightGBM or CatBoost model saves in two parts, no trust needed.

The preceding steps go to skops (default-trusted scikit-learn types), the last step to its own
flavor under ``model/final/``. Every case is fitted and saved once per module; ONE fresh
interpreter loads them all with ``modelpack.load`` (no trust) and predicts, and each case
compares with the in-process pipeline, exactly.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
catboost = pytest.importorskip("catboost")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

import modelpack  # noqa: E402
from modelpack.descriptor import Descriptor, build_manifest  # noqa: E402
from modelpack.errors import (  # noqa: E402
    ConversionError,
    IntegrityError,
    InvalidModelError,
    UntrustedModelError,
)
from modelpack.flavors import sklearn as sk_flavor  # noqa: E402
from modelpack.flavors._sklearn_composite import PipelineParts  # noqa: E402
from modelpack.model import check_trust, untrusted_needs  # noqa: E402
from modelpack.testing import check_flavor  # noqa: E402
from modelpack.trust import TrustNeededWarning  # noqa: E402

N_ROWS = 200
TREES = 10
CATBOOST = {"iterations": TREES, "thread_count": 1, "allow_writing_files": False, "verbose": False}


def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=N_ROWS),
            "b": rng.normal(size=N_ROWS),
            "colour": np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, N_ROWS)],
        }
    )
    score = frame["a"] + 0.5 * frame["b"] + (frame["colour"] == "red") * 1.5
    labels = (score > 0.4).to_numpy(dtype=int)
    target = score.to_numpy() + rng.normal(scale=0.1, size=N_ROWS)
    return frame, labels, target


FRAME, LABELS, TARGET = _data()
NUMBERS = FRAME[["a", "b"]]


def _scaler() -> Any:
    return StandardScaler()


def _columns() -> Any:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    return ColumnTransformer([("onehot", encoder, ["colour"])], remainder="passthrough")


HEADS: dict[str, tuple[Callable[[], Any], pd.DataFrame]] = {
    "scaler": (_scaler, NUMBERS),
    "columns": (_columns, FRAME),
}
FINALS: dict[str, tuple[Callable[[], Any], np.ndarray, tuple[str, ...]]] = {
    "xgboost": (
        lambda: xgboost.XGBClassifier(n_estimators=TREES, max_depth=3),
        LABELS,
        ("predict", "predict_proba", "predict_raw"),
    ),
    "lightgbm": (
        lambda: lightgbm.LGBMRegressor(n_estimators=TREES, verbose=-1),
        TARGET,
        ("predict", "predict_raw"),
    ),
    "catboost": (
        lambda: catboost.CatBoostClassifier(**CATBOOST),
        LABELS,
        ("predict", "predict_proba", "predict_raw"),
    ),
}


def _pipeline(head: str, final: str) -> Pipeline:
    make_head, inputs = HEADS[head]
    make_final, target, _ = FINALS[final]
    return Pipeline([("prep", make_head()), ("model", make_final())]).fit(inputs, target)


def _reference(pipeline: Pipeline, data: Any, method: str) -> Any:
    if method != "predict_raw":
        return getattr(pipeline, method)(data)
    features, model = pipeline[:-1].transform(data), pipeline[-1]
    if isinstance(model, xgboost.XGBModel):
        return model.predict(features, output_margin=True)
    if isinstance(model, lightgbm.LGBMModel):
        return model.predict(features, raw_score=True)
    return model.predict(features, prediction_type="RawFormulaVal")


@dataclass
class Case:
    head: str
    final: str
    method: str
    expected: Any = None
    path: Path = Path()  # set once saved
    got: Any = None

    @property
    def id(self) -> str:
        return f"{self.head}-{self.final}-{self.method}"


CASES = [
    Case(head, final, method)
    for head in HEADS
    for final, (_, _, methods) in FINALS.items()
    for method in methods
]

_LOADER = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
import modelpack

root = Path(sys.argv[1])
for entry in json.loads((root / "manifest.json").read_text()):
    data = pd.read_parquet(root / entry["inputs"])
    result = modelpack.load(entry["path"]).predict(data)
    np.save(root / f"{entry['id']}.out.npy", np.asarray(result), allow_pickle=False)
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("sklearn-boosting")
    for head, (_, inputs) in HEADS.items():
        inputs.to_parquet(root / f"{head}.parquet")
    pipelines = {(h, f): _pipeline(h, f) for h in HEADS for f in FINALS}
    manifest = []
    for case in CASES:
        pipeline, inputs = pipelines[case.head, case.final], HEADS[case.head][1]
        case.expected = np.asarray(_reference(pipeline, inputs, case.method))
        with warnings.catch_warnings():
            warnings.simplefilter("error", TrustNeededWarning)  # save must not warn of trust
            case.path = modelpack.save(
                pipeline, root / case.id, predict_method=case.method, input_example=inputs[:5]
            )
        manifest.append({"id": case.id, "path": str(case.path), "inputs": f"{case.head}.parquet"})
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
def test_fresh_process_answers_exactly_as_the_pipeline(zoo: dict[str, Case], case_id: str) -> None:
    case = zoo[case_id]
    assert case.got.shape == case.expected.shape
    assert np.array_equal(case.got, case.expected), case_id


def test_loading_needs_no_trust(zoo: dict[str, Case], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPACK_TRUST", raising=False)
    monkeypatch.delenv("MODELPACK_TRUST_PICKLE", raising=False)
    for case in zoo.values():
        assert untrusted_needs(case.path)[2] == [], case.id
        assert check_trust(case.path, None) == [], case.id
        trust = Descriptor.read(case.path).trust
        assert trust == {"executes_code": False, "needs": []}, case.id


def test_two_parts_and_no_pickle_in_the_directory(zoo: dict[str, Case]) -> None:
    final_files = {"xgboost": "model.ubj", "lightgbm": "model.txt", "catboost": "model.cbm"}
    for case in zoo.values():
        descriptor = Descriptor.read(case.path)
        assert sorted(f for f in descriptor.files if f.startswith("model/")) == [
            f"model/final/{final_files[case.final]}",
            "model/head.skops",
        ]
        assert not list(case.path.rglob("*.pkl")) and not list(case.path.rglob("*.joblib"))
        config = descriptor.flavors["sklearn"]
        assert descriptor.loader == "sklearn" and config["file"] == "head.skops"
        assert config["final"]["flavor"] == case.final and config["final"]["name"] == "model"
        assert config["final"]["config"]["predict_method"] == case.method
        text = (case.path / "modelpack.yaml").read_text()
        assert "!!python" not in text and "!!binary" not in text
        assert f"{case.final}" in (case.path / "requirements.txt").read_text()


def test_native_load_rebuilds_the_pipeline_or_returns_its_parts(zoo: dict[str, Case]) -> None:
    for final, cls in (
        ("xgboost", xgboost.XGBClassifier),
        ("catboost", catboost.CatBoostClassifier),
    ):
        case = zoo[f"columns-{final}-predict_proba"]
        for native in (sk_flavor.load(case.path), modelpack.load(case.path).unwrap()):
            assert type(native) is Pipeline
            assert [name for name, _ in native.steps] == ["prep", "model"]
            assert type(native[-1]) is cls
            assert np.array_equal(native.predict_proba(FRAME), case.expected)
    case = zoo["columns-lightgbm-predict"]
    for parts in (sk_flavor.load(case.path), modelpack.load(case.path).unwrap()):
        assert isinstance(parts, PipelineParts) and parts.name == "model"
        assert type(parts.head) is Pipeline and isinstance(parts.final, lightgbm.Booster)
        assert np.array_equal(parts.final.predict(parts.head.transform(FRAME)), case.expected)


@pytest.mark.parametrize("final", list(FINALS))
def test_check_flavor(final: str, tmp_path: Path) -> None:
    check_flavor("sklearn", _pipeline("columns", final), FRAME.head(8), tmp_path)


def test_an_ordinary_pipeline_is_stored_as_before(tmp_path: Path) -> None:
    pipeline = Pipeline([("prep", _columns()), ("model", LogisticRegression())]).fit(FRAME, LABELS)
    path = modelpack.save(pipeline, tmp_path / "m", input_example=FRAME.head(3))
    descriptor = Descriptor.read(path)
    config = descriptor.flavors["sklearn"]
    assert "final" not in config and config["file"] == "model.skops"
    assert sorted(f for f in descriptor.files if f.startswith("model/")) == ["model/model.skops"]
    assert type(sk_flavor.load(path)) is Pipeline
    assert np.array_equal(modelpack.load(path).predict(FRAME), pipeline.predict(FRAME))


def test_pickle_on_request_keeps_the_whole_pipeline(tmp_path: Path) -> None:
    pipeline = _pipeline("scaler", "xgboost")
    path = sk_flavor.save(pipeline, tmp_path / "m", serialization="pickle")
    config = Descriptor.read(path).flavors["sklearn"]
    assert "final" not in config and config["file"] == "model.pkl"


def test_a_one_step_pipeline_splits_too(tmp_path: Path) -> None:
    # The frame reaches LightGBM as a frame: its categorical column is read as categories.
    frame = FRAME.astype({"colour": "category"})
    model = lightgbm.LGBMClassifier(n_estimators=TREES, verbose=-1)
    pipeline = Pipeline([("model", model)]).fit(frame, LABELS)
    path = modelpack.save(
        pipeline, tmp_path / "m", predict_method="predict_proba", input_example=frame.head(3)
    )
    assert untrusted_needs(path)[2] == []
    got = modelpack.load(path).predict(frame)
    assert np.array_equal(got, pipeline.predict_proba(frame))
    parts = sk_flavor.load(path)
    assert isinstance(parts, PipelineParts) and parts.name == "model"


def test_a_nested_pipeline_is_refused_with_the_fix(tmp_path: Path) -> None:
    inner = Pipeline([("scale", StandardScaler()), ("xgb", xgboost.XGBClassifier(n_estimators=3))])
    pipeline = Pipeline([("prep", _columns()), ("model", inner)]).fit(FRAME, LABELS)
    with pytest.raises(InvalidModelError, match=r"Pipeline ending in a XGBClassifier.*flatten"):
        modelpack.save(pipeline, tmp_path / "m")


def test_the_final_flavor_checks_the_predict_method(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="predict_method= one of 'predict', 'predict_raw'"):
        modelpack.save(
            _pipeline("scaler", "lightgbm"), tmp_path / "m", predict_method="predict_proba"
        )


def test_onnx_conversion_is_refused_in_one_line(zoo: dict[str, Case]) -> None:
    from modelpack.convert import to_onnx

    path = zoo["scaler-xgboost-predict"].path
    with pytest.raises(ConversionError, match="last step is saved by the xgboost flavor") as err:
        to_onnx(path, path.parent / "onnx-refused")
    assert "\n" not in str(err.value)


# -- tampering: an attacker edits the final part's config or files and reseals the manifest ---


def _tamper(case: Case, tmp_path: Path, edit: Callable[[Path, dict[str, Any]], None]) -> Path:
    import shutil

    path = tmp_path / case.id
    shutil.copytree(case.path, path)
    descriptor = Descriptor.read(path)
    edit(path, descriptor.flavors["sklearn"]["final"])
    descriptor.files = build_manifest(path)
    descriptor.write(path)
    return path


class _Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (self.code,)


def test_a_final_part_swapped_for_a_pickle_needs_trust(
    zoo: dict[str, Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPACK_TRUST", raising=False)
    marker = tmp_path / "pwned"

    def to_pickle(path: Path, final: dict[str, Any]) -> None:
        payload = f"open({str(marker)!r}, 'w').write('pwned')"
        (path / "model" / "final" / "model.pkl").write_bytes(pickle.dumps(_Exec(payload)))
        final["flavor"] = "python"
        final["config"] = {"serialization": "cloudpickle", "file": "model.pkl"}

    path = _tamper(zoo["scaler-xgboost-predict"], tmp_path, to_pickle)
    assert [str(n) for n in untrusted_needs(path)[2]] == ["pickle model/final/model.pkl"]
    with pytest.raises(UntrustedModelError, match="pickle model/final/model.pkl"):
        check_trust(path, None)
    with pytest.raises(UntrustedModelError, match="pickle model/final/model.pkl"):
        modelpack.load(path)
    with pytest.raises(UntrustedModelError):
        sk_flavor.load(path)
    assert not marker.exists()


def test_a_final_part_naming_a_class_needs_trust(
    zoo: dict[str, Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELPACK_TRUST", raising=False)

    def to_class(path: Path, final: dict[str, Any]) -> None:
        final["flavor"] = "python"
        final["config"] = {"serialization": "class", "class": "subprocess:Popen"}

    path = _tamper(zoo["columns-catboost-predict"], tmp_path, to_class)
    with pytest.raises(UntrustedModelError, match="class subprocess.Popen"):
        modelpack.load(path)


def test_a_final_part_pointing_back_at_sklearn_is_refused(
    zoo: dict[str, Case], tmp_path: Path
) -> None:
    def to_sklearn(path: Path, final: dict[str, Any]) -> None:
        final["flavor"] = "sklearn"

    path = _tamper(zoo["scaler-lightgbm-predict"], tmp_path, to_sklearn)
    with pytest.raises(InvalidModelError, match="cannot be sklearn"):
        modelpack.load(path)


def test_a_changed_final_file_fails_the_integrity_check(
    zoo: dict[str, Case], tmp_path: Path
) -> None:
    import shutil

    path = tmp_path / "m"
    shutil.copytree(zoo["scaler-xgboost-predict"].path, path)
    victim = path / "model" / "final" / "model.ubj"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model/final/model.ubj"):
        modelpack.load(path)
