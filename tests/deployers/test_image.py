"""``modelpack build-image``: the context it writes, engine errors, and a real image that serves."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack._image_requirements import build_wheel, model_requirements, source_checkout
from modelpack.cli import main
from modelpack.errors import DeploymentError, InvalidInputError
from modelpack.image import ImageOptions, build_image, find_engine, write_context
from tests.conftest import free_port, skip_or_fail

BASE_IMAGE = "localhost/modelpack-base:bookworm"  # made by .ci/make-base-image.sh
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
COLUMNS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=COLUMNS)
    clf = LogisticRegression().fit(frame, (frame["a"] > 0).astype(int))
    path = tmp_path_factory.mktemp("image") / "clf"
    modelpack.save(clf, path, input_example=frame.head(3))
    return path, clf, frame


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One modelpack wheel for the module (building it takes seconds)."""
    source = source_checkout()
    assert source is not None, "the tests run from a checkout"
    return build_wheel(source, tmp_path_factory.mktemp("wheel"))


def test_context_has_dockerfile_pins_and_model(
    model: tuple[Path, object, object], wheel: Path, tmp_path: Path
) -> None:
    path, _, _ = model
    context = write_context(
        str(path), tmp_path / "ctx", ImageOptions(base_image=BASE_IMAGE, modelpack_wheel=wheel)
    )
    dockerfile = (context / "Dockerfile").read_text()
    assert f"FROM {BASE_IMAGE}\n" in dockerfile
    assert "USER modelpack\n" in dockerfile and "useradd --uid 10001" in dockerfile
    assert "EXPOSE 8080\n" in dockerfile
    assert 'ENTRYPOINT ["modelpack", "serve"]\nCMD ["serve"]\n' in dockerfile
    assert "COPY model/ /opt/ml/model/" in dockerfile
    requirements = (context / "requirements.txt").read_text().splitlines()
    assert requirements[0] == f"modelpack @ file:///opt/modelpack/build/wheels/{wheel.name}"
    assert not any(r.startswith("modelpack==") for r in requirements)
    assert any(r.startswith("scikit-learn==") for r in requirements)
    pins = (context / "constraints.txt").read_text().splitlines()
    for dist in ("numpy", "starlette", "uvicorn", "uvloop"):
        assert any(p.lower().startswith(f"{dist}==") for p in pins), dist
    assert (context / "wheels" / wheel.name).is_file()
    assert (context / "model" / "modelpack.yaml").is_file()
    assert (context / "build-ca.crt").read_text() == ""


def test_fetch_model_fetches_at_start_and_needs_a_remote_uri(
    model: tuple[Path, object, object], wheel: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="--fetch-model needs a models:/"):
        write_context(str(model[0]), tmp_path / "ctx", ImageOptions(fetch_model=True))


def test_gpu_swaps_onnxruntime(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "modelpack==0.1.0\nonnxruntime==1.22.0\nnumpy==2.0.0  # pinned\n"
    )
    assert model_requirements(tmp_path, gpu=True) == ["onnxruntime-gpu==1.22.0", "numpy==2.0.0"]
    assert model_requirements(tmp_path, gpu=False) == ["onnxruntime==1.22.0", "numpy==2.0.0"]


def test_missing_engine_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeploymentError, match=r"no container engine found; install docker, podman"):
        find_engine()
    with pytest.raises(DeploymentError, match=r"buildah is not installed; install it"):
        find_engine("buildah")
    with pytest.raises(InvalidInputError, match="unknown engine"):
        find_engine("rkt")


def test_cli_context_only_and_missing_engine(
    model: tuple[Path, object, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ctx"
    with pytest.raises(SystemExit) as exit_info:
        main(["build-image", str(model[0]), "-t", "m:1", "--gpu", "--context-only", str(out)])
    assert exit_info.value.code == 0
    assert (out / "Dockerfile").is_file()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["build-image", str(model[0]), "-t", "m:1", "--engine", "podman"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error [deployment_error]: podman is not installed; install it")


def _podman_ready() -> None:
    if shutil.which("podman") is None:
        skip_or_fail("podman is not installed (apt-get install podman runc)")
    probe = subprocess.run(
        ["podman", "image", "exists", BASE_IMAGE], capture_output=True, check=False
    )
    if probe.returncode != 0:
        skip_or_fail(f"the base image {BASE_IMAGE} is missing; run .ci/make-base-image.sh")


def _start_and_predict(
    name: str, args: list[str], port: int, clf: LogisticRegression, frame: pd.DataFrame
) -> None:
    """Run the image detached, wait for /ping, and check /invocations against sklearn."""
    # runc and raised ulimits: what podman needs on these machines (ENVIRONMENT.md).
    run = [
        "podman", "run", "-d", "--name", name, "--runtime", "runc",
        "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", *args,
    ]  # fmt: skip
    subprocess.run(run, check=True, capture_output=True, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            pytest.fail(f"/ping never answered 200:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.5)
    rows = frame.head(5)
    body = {"dataframe_split": {"columns": COLUMNS, "data": rows.values.tolist()}}
    answer = httpx.post(f"{url}/invocations", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == clf.predict(rows).tolist()


@pytest.mark.slow
def test_built_image_serves_predictions(
    model: tuple[Path, LogisticRegression, pd.DataFrame], wheel: Path, tmp_path: Path
) -> None:
    _podman_ready()
    path, clf, frame = model
    tag = f"localhost/modelpack-test-image:{int(time.time())}"
    context = write_context(
        str(path), tmp_path / "ctx", ImageOptions(base_image=BASE_IMAGE, modelpack_wheel=wheel)
    )
    # pip inside the build reaches the index through the host's network and CA bundle.
    build_image(
        context,
        tag,
        engine="podman",
        network="host",
        ca_bundle=CA_BUNDLE if CA_BUNDLE.is_file() else None,
        log=tmp_path / "build.log",
    )
    port = free_port()
    name = f"modelpack-test-{port}"
    try:
        _start_and_predict(name, ["-p", f"127.0.0.1:{port}:8080", tag], port, clf, frame)
        user = subprocess.run(
            ["podman", "exec", name, "id", "-u"], capture_output=True, text=True, check=True
        )
        assert user.stdout.strip() == "10001"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False)
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.mark.slow
def test_fetching_image_loads_the_model_from_the_team_server_at_start(
    model: tuple[Path, LogisticRegression, pd.DataFrame],
    wheel: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--fetch-model: no model in the image; `serve` resolves models:/ through the server."""
    from modelpack import registry
    from modelpack._rest import close_all
    from tests._team_server import team_server

    _podman_ready()
    path, clf, frame = model
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "client-home"))
    for env in ("MODELPACK_STORE_URI", "MODELPACK_ARTIFACT_URI", "MODELPACK_TRACKING_TOKEN"):
        monkeypatch.delenv(env, raising=False)
    tag = f"localhost/modelpack-test-fetch:{int(time.time())}"
    name = f"modelpack-test-fetch-{free_port()}"
    with team_server(tmp_path / "home") as server:
        monkeypatch.setenv("MODELPACK_TRACKING_URI", server)
        registry.register("fetched", path)
        registry.set_alias("fetched", "champion", 1)
        uri = "models:/fetched@champion"
        context = write_context(
            uri,
            tmp_path / "ctx",
            ImageOptions(base_image=BASE_IMAGE, modelpack_wheel=wheel, fetch_model=True),
        )
        assert not (context / "model").exists()
        build_image(
            context,
            tag,
            engine="podman",
            network="host",
            ca_bundle=CA_BUNDLE if CA_BUNDLE.is_file() else None,
            log=tmp_path / "build.log",
        )
        port = free_port()
        args = [
            "--network", "host",
            "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", f"MODELPACK_TRACKING_URI={server}",
            tag,
        ]  # fmt: skip
        try:
            _start_and_predict(name, args, port, clf, frame)
        finally:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
            subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
            close_all()


def test_trust_is_baked_into_the_entry_point_only_when_given(
    model: tuple[Path, object, object], wheel: Path, tmp_path: Path
) -> None:
    path, _, _ = model
    names = ("pkg.Model", "pkg.Other")
    for trust, expected in ((True, '"--trust"'), (names, '"--trust-type", "pkg.Model"')):
        options = ImageOptions(base_image=BASE_IMAGE, modelpack_wheel=wheel, trust=trust)
        context = write_context(str(path), tmp_path / f"ctx-{trust is True}", options)
        entrypoint = (context / "Dockerfile").read_text().split("ENTRYPOINT ", 1)[1].split("\n")[0]
        assert entrypoint.startswith('["modelpack", "serve", ') and expected in entrypoint
