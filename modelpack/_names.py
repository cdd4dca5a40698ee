"""The one rule for the name of a served model (``serve -m NAME=URI``, a deployment's model set)."""

from __future__ import annotations

import re

from modelpack.errors import InvalidInputError

# A name travels in URL paths (/v2/models/NAME/infer, /invocations/NAME), metric labels and
# S3 keys (a SageMaker multi-model archive is NAME.tar.gz).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_model_name(name: str) -> str:
    """``name`` when it is a valid model name; one-line ``invalid_input`` otherwise."""
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid model name {name!r}: use letters, digits, '_', '.' and '-' "
            "(up to 128, starting with a letter or digit)"
        )
    return name


def is_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None
