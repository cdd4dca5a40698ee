"""The trust policy's surfaces: options, environment, per-model grants, scan, inspect, digests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

import modelpack
import modelpack.flavors.sklearn
from modelpack import trust
from modelpack.cli import main
from modelpack.descriptor import DESCRIPTOR, Descriptor, build_manifest
from modelpack.errors import IntegrityError, UntrustedModelError
from tests._team_server import team_server
from tests.flavors.sklearn_models import MeanRegressor

MEAN = "tests.flavors.sklearn_models.MeanRegressor"
X = np.arange(8, dtype=float).reshape(4, 2)


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch, tmp_path):
    monkeypatch.delenv("MODELPACK_TRUST")
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))  # grants of this test only


def cli(capsys, *args: object) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def untrusted(tmp_path) -> Path:
    """A scikit-learn model of a class skops does not know: loading it needs trust."""
    model = MeanRegressor().fit(X, np.array([1.0, 2.0, 3.0, 4.0]))
    return modelpack.save(model, tmp_path / "mean", input_example=X[:2])


@pytest.fixture
def plain(tmp_path) -> Path:
    clf = LogisticRegression().fit(X, [0, 0, 1, 1])
    return modelpack.save(clf, tmp_path / "plain", input_example=X[:2])


def test_the_policy_reads_options_before_the_environment(monkeypatch):
    need = trust.Need(trust.TYPE, "pkg.Thing")
    assert not trust.policy().allows(need)
    assert trust.policy(["pkg.Thing"]).allows(need)
    assert trust.policy(["pkg:Thing"]).allows(need)  # the descriptor's spelling works too
    monkeypatch.setenv("MODELPACK_TRUST", "other.Name, pkg.Thing")
    assert trust.policy().allows(need)
    assert not trust.policy(False).allows(need)  # an explicit False beats the environment
    monkeypatch.setenv("MODELPACK_TRUST", "1")
    assert trust.policy().allows(trust.Need(trust.PICKLE, "model/model.pkl"))
    monkeypatch.setenv("MODELPACK_TRUST", "0")
    assert not trust.policy().allows(need)
    # A pickle or shipped code is never covered by a name, however it is spelled.
    assert not trust.policy(["model/model.pkl"]).allows(trust.Need(trust.PICKLE, "model/model.pkl"))


def test_nothing_is_trusted_by_package_prefix():
    for name in ("numpy.testing._private.utils.runstring", "sklearn.utils._testing.check_output"):
        assert not trust.trusted_by_default(trust.Need(trust.FUNCTION, name))
    assert trust.trusted_by_default(trust.Need(trust.TYPE, "sklearn.tree._tree.Tree"))
    linear = "torch.nn.modules.linear.Linear"
    assert trust.trusted_by_default(trust.Need(trust.MODULE, linear))  # rebuilt, never called
    assert not trust.trusted_by_default(trust.Need(trust.CLASS, linear))  # a python-flavor class
    bert = "transformers.models.bert.modeling_bert.BertModel"
    assert trust.trusted_by_default(trust.Need(trust.MODULE, bert))
    assert not trust.trusted_by_default(trust.Need(trust.FUNCTION, "transformers.models.x.run"))
    assert not trust.trusted_by_default(trust.Need(trust.PICKLE, "sklearn.tree._tree.Tree"))


def test_the_refusal_names_the_need_and_the_exact_option(untrusted, capsys):
    with pytest.raises(UntrustedModelError) as caught:
        modelpack.load(untrusted)
    message = str(caught.value)
    assert "\n" not in message
    assert f"type {MEAN}" in message and f"--trust-type {MEAN}" in message
    assert caught.value.code == "untrusted_model" and caught.value.http_status == 403
    code, out, err = cli(capsys, "predict", "-m", untrusted, "-i", _rows(untrusted))
    assert code == 2 and err.startswith("error [untrusted_model]") and err.count("\n") == 1
    code, out, _ = cli(
        capsys, "predict", "-m", untrusted, "-i", _rows(untrusted), "--trust-type", MEAN
    )
    assert code == 0 and json.loads(out)["predictions"] == [2.5] * 2


def _rows(model: Path) -> Path:
    file = model.parent / "rows.json"
    file.write_text(json.dumps({"inputs": X[:2].tolist()}))
    return file


def test_a_grant_is_tied_to_the_models_content(untrusted, capsys):
    code, out, _ = cli(capsys, "trust", "add", untrusted)
    assert code == 0 and MEAN in out
    digest = trust.descriptor_digest(untrusted)
    assert modelpack.load(untrusted).predict(X).tolist() == [2.5] * 4  # no option needed now
    code, out, _ = cli(capsys, "trust", "list")
    assert code == 0 and digest in out and str(untrusted) in out

    # The same path with other content (a new save) is another model: the grant does not follow.
    other = MeanRegressor().fit(X, np.array([0.0, 0.0, 0.0, 4.0]))
    modelpack.save(other, untrusted, input_example=X[:2], overwrite=True)
    with pytest.raises(UntrustedModelError):
        modelpack.load(untrusted)

    code, out, _ = cli(capsys, "trust", "remove", f"sha256:{digest}")
    assert code == 0 and digest in out
    code, _, err = cli(capsys, "trust", "remove", f"sha256:{digest}")
    assert code == 2 and "model_not_found" in err
    assert trust.read_grants() == {}


def test_scan_exits_0_for_a_model_that_needs_no_trust_and_1_with_the_list(plain, untrusted, capsys):
    code, out, _ = cli(capsys, "scan", plain)
    assert code == 0 and "executes code: no" in out
    code, out, _ = cli(capsys, "scan", untrusted)
    assert code == 1 and "executes code: yes" in out and f"type {MEAN}" in out
    code, out, _ = cli(capsys, "scan", untrusted, "--json")
    body = json.loads(out)
    assert code == 1 and body["executes_code"] is True
    assert body["needs"] == [{"kind": "type", "name": MEAN}]
    assert body["digest"] == f"sha256:{trust.descriptor_digest(untrusted)}"


def test_scan_decides_from_the_files_not_from_the_descriptors_claim(untrusted, capsys):
    # A forger rewrites the record ("executes_code: false") and reseals every hash.
    descriptor = Descriptor.read(untrusted)
    descriptor.trust = {"executes_code": False, "needs": []}
    descriptor.files = build_manifest(untrusted)
    descriptor.write(untrusted)
    code, out, _ = cli(capsys, "scan", untrusted)
    assert code == 1 and MEAN in out
    with pytest.raises(UntrustedModelError):
        modelpack.load(untrusted)


def test_inspect_shows_what_loading_runs_and_the_digest(plain, untrusted, capsys):
    code, out, _ = cli(capsys, "inspect", untrusted)
    assert code == 0
    assert f"executes code: yes, loading needs trust for: type {MEAN}" in out
    assert f"digest sha256:{trust.descriptor_digest(untrusted)}" in out
    code, out, _ = cli(capsys, "inspect", plain)
    assert "executes code: no" in out
    code, out, _ = cli(capsys, "inspect", plain, "--json")
    assert json.loads(out)["trust"] == {"executes_code": False, "needs": []}


def test_an_edited_descriptor_fails_load_and_verify(plain, capsys):
    data = yaml.safe_load((plain / DESCRIPTOR).read_text())
    data["flavors"]["sklearn"]["predict_method"] = "predict_proba"
    (plain / DESCRIPTOR).write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(IntegrityError, match="edited after the model was saved"):
        modelpack.load(plain)
    code, _, err = cli(capsys, "verify", plain)
    assert code == 1 and "integrity_error" in err and "edited after" in err


def test_a_pinned_digest_is_checked(plain, capsys):
    digest = f"sha256:{trust.descriptor_digest(plain)}"
    assert modelpack.load(plain, digest=digest).predict(X).shape == (4,)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(IntegrityError, match="differs from the one pinned"):
        modelpack.load(plain, digest=wrong)
    code, out, _ = cli(capsys, "verify", plain, "--digest", digest)
    assert code == 0 and digest in out
    code, _, err = cli(capsys, "verify", plain, "--digest", wrong)
    assert code == 1 and "integrity_error" in err


def test_old_descriptors_without_a_checksum_still_load(plain):
    data = yaml.safe_load((plain / DESCRIPTOR).read_text())
    for key in ("checksum", "trust"):
        data.pop(key)
    data["format_version"] = 1
    (plain / DESCRIPTOR).write_text(yaml.safe_dump(data, sort_keys=False))
    assert modelpack.load(plain).predict(X).shape == (4,)


def test_the_team_server_refuses_a_manifest_that_climbs_out(tmp_path, plain):
    from modelpack._rest import RestArtifactStore, RestClient

    home = tmp_path / "server-home"
    home.mkdir()
    evil = tmp_path / "evil"
    shutil.copytree(plain, evil)
    descriptor = Descriptor.read(evil)
    descriptor.files = {
        f"../{rel}" if rel.endswith(".skops") else rel: e for rel, e in descriptor.files.items()
    }
    descriptor.write(evil)
    with team_server(home) as url:
        client = RestClient(url)
        store = RestArtifactStore(client)
        for rel, entry in Descriptor.read(plain).files.items():
            store.put_file(plain / rel, entry.sha256)  # every blob is there: only a path is bad
        sha = store.put_file(evil / DESCRIPTOR)
        answer = httpx.post(
            f"{url}/api/v1/models/evil/versions",
            json={"descriptor_sha256": sha, "source": str(evil)},
            timeout=30,
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "unsafe_path"
        listed = httpx.get(f"{url}/api/v1/models", timeout=30).json()
        assert "evil" not in json.dumps(listed)
        client.close()


def test_save_says_up_front_when_loading_will_need_trust(tmp_path, plain):
    import modelpack.flavors.python
    from tests.models import Doubler

    with pytest.warns(trust.TrustNeededWarning, match=r"--trust-type tests\.models\.Doubler"):
        modelpack.flavors.python.save(Doubler(), tmp_path / "doubler")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", trust.TrustNeededWarning)  # nothing to say: no warning
        modelpack.save(LogisticRegression().fit(X, [0, 0, 1, 1]), tmp_path / "clf")
