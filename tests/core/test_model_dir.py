import os

import numpy as np
import pandas as pd
import pytest
import yaml

import modelpack
from modelpack.descriptor import DESCRIPTOR, FORMAT_VERSION, Descriptor
from modelpack.errors import (
    FormatVersionError,
    IntegrityError,
    InvalidModelError,
    ModelExistsError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from tests.models import Doubler


@pytest.fixture
def saved(tmp_path):
    (tmp_path / "factor.txt").write_text("3")
    return modelpack.save(
        Doubler(),
        tmp_path / "m",
        input_example={"x": [1.0, 2.0]},
        artifacts={"factor": tmp_path / "factor.txt"},
        metadata={"team": "ranking", "ünïcode": "ok"},
        requirements=["requests>=2"],
    )


def _edit_descriptor(path, **changes):
    data = yaml.safe_load((path / DESCRIPTOR).read_text())
    data.update(changes)
    (path / DESCRIPTOR).write_text(yaml.safe_dump(data))


def test_descriptor_holds_every_field(saved):
    data = yaml.safe_load((saved / DESCRIPTOR).read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert data["loader"] == "python" and "python" in data["flavors"]
    assert data["modelpack_version"] == modelpack.__version__
    assert data["created_at"].endswith("+00:00")
    assert data["signature"]["inputs"]["columns"][0]["name"] == "x"
    assert data["signature"]["outputs"]["tensors"][0]["dtype"] == "float64"
    assert data["input_example"] == {"file": "input_example.json", "format": "dataframe_split"}
    assert data["environment"]["python"].count(".") == 2
    assert data["metadata"] == {"team": "ranking", "ünïcode": "ok"}
    assert set(data["files"]) == {
        "input_example.json",
        "requirements.txt",
        "model/artifacts/factor",
    }
    for rel, entry in data["files"].items():
        assert entry["size"] == (saved / rel).stat().st_size
        assert len(entry["sha256"]) == 64
    requirements = (saved / "requirements.txt").read_text().split()
    assert f"modelpack=={modelpack.__version__}" in requirements
    assert "requests>=2" in requirements


def test_load_gives_a_generic_model(saved):
    model = modelpack.load(saved)
    np.testing.assert_allclose(model.predict({"x": [1.0, 5.0]}), [3.0, 15.0])
    assert model.metadata["team"] == "ranking"
    assert model.signature is not None and model.descriptor.loader == "python"
    assert isinstance(model.unwrap(), Doubler)
    assert model.input_example()["x"].tolist() == [1.0, 2.0]
    assert modelpack.load(str(saved)).model_id == model.model_id
    assert modelpack.load(f"file://{saved}").model_id == model.model_id


def test_a_changed_byte_names_the_file(saved):
    target = saved / "model/artifacts/factor"
    target.write_text("4")  # same size, different content
    with pytest.raises(IntegrityError, match="model/artifacts/factor"):
        modelpack.load(saved)


def test_a_missing_file_is_named(saved):
    os.remove(saved / "input_example.json")
    with pytest.raises(IntegrityError, match=r"input_example.json is missing"):
        modelpack.load(saved)


def test_an_extra_file_is_named(saved):
    (saved / "model" / "surprise.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="model/surprise.bin"):
        modelpack.load(saved)


def test_a_truncated_file_is_named(saved):
    target = saved / "requirements.txt"
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(IntegrityError, match="requirements.txt has"):
        modelpack.load(saved)


def test_a_newer_format_is_refused_with_a_clear_message(saved):
    _edit_descriptor(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(FormatVersionError, match="upgrade modelpack"):
        modelpack.load(saved)


def test_unknown_fields_are_refused(saved):
    _edit_descriptor(saved, surprise=1)
    with pytest.raises(InvalidModelError, match="unknown field.*surprise"):
        modelpack.load(saved)


def test_malformed_descriptors_are_invalid_models(saved):
    (saved / DESCRIPTOR).write_text("format_version: [unclosed")
    with pytest.raises(InvalidModelError, match="not valid YAML"):
        Descriptor.read(saved)
    (saved / DESCRIPTOR).write_text("- a list")
    with pytest.raises(InvalidModelError, match="mapping"):
        Descriptor.read(saved)


def test_missing_paths_are_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        modelpack.load(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match=DESCRIPTOR):
        modelpack.load(tmp_path)
    with pytest.raises(ModelNotFoundError, match="unknown URI scheme"):
        modelpack.load("gopher://x")


def test_saving_over_an_existing_path_needs_overwrite(saved, tmp_path):
    before = (saved / DESCRIPTOR).read_text()
    with pytest.raises(ModelExistsError, match="overwrite=True"):
        modelpack.save(Doubler(), saved, artifacts={"factor": tmp_path / "factor.txt"})
    assert (saved / DESCRIPTOR).read_text() == before
    modelpack.save(
        Doubler(offset=1),
        saved,
        artifacts={"factor": tmp_path / "factor.txt"},
        init_args={"offset": 1},
        overwrite=True,
    )
    assert modelpack.load(saved).predict(pd.DataFrame({"x": [1.0]})).tolist() == [4.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["factor.txt", "m"]


def test_an_unsupported_object_lists_the_installed_flavors(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"installed flavors: .*sklearn"):
        modelpack.save(42, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_nothing_behind(tmp_path):
    with pytest.raises(InvalidModelError, match="does not exist"):
        modelpack.save(Doubler(), tmp_path / "m", artifacts={"factor": tmp_path / "missing"})
    assert list(tmp_path.iterdir()) == []


def test_an_example_that_contradicts_the_signature_is_refused(tmp_path):
    from modelpack.errors import SignatureError

    sig = {"inputs": {"type": "columns", "columns": [{"name": "x", "type": "int64"}]}}
    (tmp_path / "f").write_text("2")
    with pytest.raises(SignatureError, match="'x'"):
        modelpack.save(
            Doubler(),
            tmp_path / "m",
            signature=sig,
            input_example={"x": [1.5]},
            artifacts={"factor": tmp_path / "f"},
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_misspelt_flavor_option_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidModelError, match=r"no option 'artefacts' \(valid: artifacts"):
        modelpack.save(Doubler(), tmp_path / "m", artefacts={})
    assert not (tmp_path / "m").exists()


def test_verify_manifest_takes_known_hashes_as_checked_and_still_compares_them(saved):
    # What an OCI pull passes: the sha256 each file's blob was checked against as it streamed.
    from modelpack.descriptor import verify_manifest

    path = saved
    files = Descriptor.read(path).files
    rel = sorted(files)[0]
    right, wrong = files[rel].sha256, "0" * 64
    verify_manifest(path, files, known={rel: right})
    with pytest.raises(IntegrityError, match=f"file {rel} does not match its sha256"):
        verify_manifest(path, files, known={rel: wrong})
    # a file not named in known is hashed as before
    size = (path / rel).stat().st_size
    (path / rel).write_bytes(b"x" * size)
    with pytest.raises(IntegrityError, match=f"file {rel} does not match its sha256"):
        verify_manifest(path, files, known={})
    verify_manifest(path, files, known={rel: right})  # taken as checked: not read again
