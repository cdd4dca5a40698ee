"""The one error hierarchy of modelpack (stdlib only).

Every error carries a stable ``code`` (for machines, logs and the CLI) and the
``http_status`` a server answers with. Catch :class:`ModelpackError` to catch
them all; domain errors also subclass the builtin a caller would catch.
"""

from __future__ import annotations

from typing import Any


class ModelpackError(Exception):
    """Root of every modelpack error."""

    code: str = "modelpack_error"
    http_status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class InvalidModelError(ModelpackError):
    """A model directory or descriptor is malformed, or an object cannot be saved."""

    code = "invalid_model"
    http_status = 400


class UnsupportedModelError(InvalidModelError, TypeError):
    """No installed flavor can save this object."""

    code = "unsupported_model"


class ModelExistsError(InvalidModelError, FileExistsError):
    """The target path of a save exists and ``overwrite`` was not given."""

    code = "model_exists"
    http_status = 409


class FormatVersionError(InvalidModelError):
    """The descriptor was written by a newer modelpack than this one."""

    code = "format_version_unsupported"


class IntegrityError(InvalidModelError):
    """A file of a model directory does not match the manifest."""

    code = "integrity_error"


class UntrustedModelError(ModelpackError, PermissionError):
    """Loading would execute code from the model files and trust was not given."""

    code = "untrusted_model"
    http_status = 403


class SignatureError(ModelpackError, ValueError):
    """Input data does not match the model's signature."""

    code = "signature_mismatch"
    http_status = 422

    def __init__(
        self, message: str, *, field: str | None = None, expected: Any = None, got: Any = None
    ) -> None:
        super().__init__(message, field=field, expected=expected, got=got)
        self.field = field
        self.expected = expected
        self.got = got


class InvalidInputError(ModelpackError, ValueError):
    """Input data could not be parsed at all (bad JSON, unknown format...)."""

    code = "invalid_input"
    http_status = 400


class ModelNotFoundError(ModelpackError, LookupError):
    """A model URI does not resolve to a model."""

    code = "model_not_found"
    http_status = 404


class RegistryConflictError(ModelpackError):
    """A registry write conflicts with existing state (duplicate name, alias...)."""

    code = "registry_conflict"
    http_status = 409


class PluginError(ModelpackError):
    """A plugin is missing, duplicated, or does not satisfy its Protocol."""

    code = "plugin_error"
    http_status = 500


class MissingDependencyError(PluginError, ImportError):
    """An optional library needed for this operation is not installed."""

    code = "missing_dependency"


class DeploymentError(ModelpackError):
    """A deployment could not be planned, created, updated or reached."""

    code = "deployment_error"
    http_status = 502


class UnsafePathError(InvalidInputError):
    """An artifact path is absolute or climbs out of its root with ``..``."""

    code = "unsafe_path"


class ArtifactError(ModelpackError):
    """The artifact store cannot store or return a blob (missing, corrupt, unreachable)."""

    code = "artifact_error"
    http_status = 502


class StoreError(ModelpackError):
    """The registry/tracking database cannot be opened or migrated."""

    code = "store_error"
    http_status = 500


class RunNotFoundError(ModelpackError, LookupError):
    """No tracking run has this id."""

    code = "run_not_found"
    http_status = 404


class RunStateError(ModelpackError):
    """A tracking call needs an active run and there is none, or a run is already active."""

    code = "run_state"
    http_status = 409


class ParamConflictError(RegistryConflictError):
    """A run's param is set once: logging it again with another value is refused."""

    code = "param_conflict"


class PayloadTooLargeError(InvalidInputError):
    """A request body is larger than the server accepts."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaTypeError(InvalidInputError):
    """A request body has a content type the server cannot read."""

    code = "unsupported_media_type"
    http_status = 415


class ServiceUnavailableError(ModelpackError):
    """The server cannot take the request now; ``retry_after`` says when to try again."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class ModelNotReadyError(ServiceUnavailableError):
    """The server is up but its model is not loaded (yet)."""

    code = "model_not_ready"


class MemoryBudgetError(ServiceUnavailableError):
    """A model does not fit a server's memory budget (``serve --max-memory``)."""

    code = "memory_budget"


class RequestTimeoutError(ModelpackError, TimeoutError):
    """A request took longer than the server's time limit."""

    code = "request_timeout"
    http_status = 504


class PredictionError(ModelpackError):
    """The model raised while predicting on input that matched its signature."""

    code = "prediction_failed"
    http_status = 500


class ConversionError(ModelpackError):
    """A model cannot be converted to another format (unsupported flavor, exporter failure)."""

    code = "conversion_failed"
    http_status = 422


class ParityError(ConversionError):
    """A converted model's outputs differ from the source flavor's beyond the tolerances.

    ``diffs`` maps each output name to its ``max_abs``, ``max_rel`` and ``mismatched`` count.
    """

    code = "parity_failed"

    def __init__(self, message: str, *, diffs: dict[str, dict[str, float]]) -> None:
        super().__init__(message, diffs=diffs)
        self.diffs = diffs


class AuthenticationError(ModelpackError, PermissionError):
    """A server that requires a token got none, or one it does not know."""

    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(ModelpackError, PermissionError):
    """The token is valid but its role does not allow this call."""

    code = "permission_denied"
    http_status = 403


class ServerUnavailableError(ModelpackError, ConnectionError):
    """The tracking server at ``MODELPACK_TRACKING_URI`` cannot be reached or answered 5xx."""

    code = "server_unavailable"
    http_status = 502


def error_class(code: str) -> type[ModelpackError]:
    """The error class whose ``code`` is ``code`` (``ModelpackError`` for an unknown one)."""
    pending: list[type[ModelpackError]] = [ModelpackError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls
        pending.extend(cls.__subclasses__())
    return ModelpackError
