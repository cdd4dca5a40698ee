"""The conformance kit third parties run (``check_deployer``, ``check_server``), over the
built-ins that run on this machine and the third-party fixture deployer. The kubernetes,
sagemaker and bentoml targets run it in their own modules, next to their test services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack import deploy
from modelpack.errors import DeploymentError
from modelpack.testing import check_deployer, check_server
from tests.deployers.conftest import READY_S


def test_local_passes_check_deployer(home: Path, models: dict[str, Any]) -> None:
    check_deployer("local", models["a"], {"max_batch_size": 4}, update_uri=models["b"])


def test_onnx_passes_check_deployer(home: Path, models: dict[str, Any]) -> None:
    pytest.importorskip("onnxruntime")
    check_deployer("onnx", models["a"], {"device": "cpu"}, update_uri=models["b"], timeout=READY_S)


def test_the_thirdparty_fixture_passes_check_deployer(
    file_deployer: Any, models: dict[str, Any]
) -> None:
    check_deployer(file_deployer, models["a"], {"greeting": "hello"}, update_uri=models["b"])


def test_check_deployer_rejects_a_deployer_that_breaks_the_contract(
    file_deployer: Any, models: dict[str, Any]
) -> None:
    class Forgetful(type(file_deployer)):  # type: ignore[misc]
        def get(self, name: str, config: Any) -> Any:  # an unknown name must be an error
            try:
                return super().get(name, config)
            except DeploymentError:
                return {"name": name, "target": "fixture", "model_uri": "", "status": "ready"}

    with pytest.raises(AssertionError, match=r"deployer check failed: get\('modelpack-check'\)"):
        check_deployer(Forgetful(), models["a"])


def test_results_of_a_thirdparty_deployer_are_typed_once(
    file_deployer: Any, models: dict[str, Any]
) -> None:
    created = deploy.create(file_deployer, "typed", str(models["a"]), {"greeting": "hi"})
    assert isinstance(created, deploy.Deployment) and created.details == {"greeting": "hi"}
    assert [d.to_dict()["name"] for d in deploy.list(file_deployer)] == ["typed"]
    assert isinstance(deploy.plan(file_deployer, "typed", str(models["a"])), deploy.Plan)
    deploy.delete(file_deployer, "typed")


def test_the_http_server_passes_check_server() -> None:
    check_server("http")


def test_check_server_with_a_model_of_its_own(models: dict[str, Any]) -> None:
    import modelpack

    model = modelpack.load(models["a"])
    rows = models["frame"].head(4)
    check_server("http", model.predictor, model.signature, data=rows)


def test_check_server_rejects_a_server_that_does_not_answer() -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    class Silent:
        name = "silent"

        def app(self, predictor: Any, signature: Any, **options: Any) -> Any:
            async def ping(request: Any) -> JSONResponse:
                return JSONResponse({}, status_code=200)

            return Starlette(routes=[Route("/ping", ping)])

        def run(self, uri: str, settings: Any) -> None:
            raise NotImplementedError

    with pytest.raises(AssertionError, match="server check failed: /invocations: 404"):
        check_server(Silent())


def test_checks_compare_predictions_with_tolerance() -> None:
    from modelpack.testing import _close

    assert _close([1.0, 2.0], np.array([1.0, 2.0 + 1e-9]))
    assert not _close([1, 2], [1, 3]) and not _close([1, 2], [[1, 2]])
