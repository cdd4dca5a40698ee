"""The HTTP model server: MLflow's scoring protocol, Open Inference Protocol v2, SageMaker.

``modelpack serve URI`` runs it; ``HttpServer().app(predictor, signature)`` builds the ASGI app
for any Predictor. Importing this package imports no web framework until an app is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from modelpack.plugins import Predictor, ServeSettings
    from modelpack.signature import Signature


class HttpServer:
    """The ``http`` server plugin."""

    name = "http"

    def app(self, predictor: Predictor, signature: Signature | None, **options: Any) -> Any:
        """An ASGI app serving ``predictor`` (already loaded; warmed at start-up)."""
        from ._app import ModelServer, build_app
        from ._loading import predictor_loader
        from ._run import serve_options

        return build_app(
            ModelServer(predictor_loader(predictor, signature), serve_options(options))
        )

    def app_for_uri(
        self,
        uri: str,
        *,
        trust: bool | list[str] | None = None,
        flavor: str | None = None,
        device: str = "cpu",
        **options: Any,
    ) -> Any:
        """An ASGI app that loads the model at ``uri`` when it starts (``/ping`` 503 until then).

        ``flavor="onnx"`` serves the model's onnx flavor on ONNX Runtime on ``device``.
        """
        from ._run import app_for_uri

        return app_for_uri(uri, trust=trust, flavor=flavor, device=device, **options)

    def app_for_models(
        self,
        models: Mapping[str, str],
        *,
        trust: bool | list[str] | None = None,
        flavor: str | None = None,
        device: str = "cpu",
        **options: Any,
    ) -> Any:
        """An ASGI app serving several models by name (``models``: name -> URI).

        Besides the single model's options: ``repository`` (a folder of models, or
        ``models:/`` with ``repository_filter`` and ``repository_alias``), ``lazy``,
        ``max_memory`` (bytes), ``follow_aliases`` (seconds) and ``model_config`` (name ->
        per-model batching settings); see docs/serving.md, "Many models".
        """
        from ._run import app_for_models

        return app_for_models(models, trust=trust, flavor=flavor, device=device, **options)

    def run(self, uri: str, settings: ServeSettings) -> None:
        """Serve the model at ``uri`` with uvicorn until told to stop (SIGTERM drains); with
        ``uri`` empty, the models of ``settings.models`` and of the options' repository."""
        from ._run import run

        run(uri, settings)


__all__ = ["HttpServer"]
