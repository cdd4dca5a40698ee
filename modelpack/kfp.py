"""Kubeflow Pipelines (KFP v2) components: ``modelpack batch`` and ``modelpack deploy`` as steps.

Each step comes in two forms with the same inputs and outputs, so a pipeline can swap one for
the other: a container component on a modelpack image (``modelpack build-image``) and a
lightweight Python component for clusters that install modelpack with pip.

No ``from __future__ import annotations`` here: kfp reads the step functions' annotations as
objects (a string annotation is refused), and copies their source into the component, so the
step functions import what they use inside their bodies and their defaults are literals.
"""

import os
from pathlib import Path
from typing import Any, Optional

from modelpack._version import __version__
from modelpack.errors import InvalidInputError, MissingDependencyError

DEFAULT_BASE_IMAGE = "python:3.11-slim"

# The container form of ``modelpack deploy``: the options (a JSON object) go through a file, and
# ``apply`` updates the deployment when ``deploy get`` finds it, otherwise creates it.
_DEPLOY_SCRIPT = """\
set -eu
out=$1 action=$2 target=$3 name=$4 model=$5 timeout=$6 options=${7:-{\\}}
case "$action" in create|update|apply) ;; *)
  echo "error [invalid_input]: unknown action '$action'; choose create, update or apply" >&2
  exit 2;;
esac
config=$(mktemp)
printf '%s' "$options" > "$config"
if [ "$action" = apply ]; then
  if modelpack deploy get -t "$target" --name "$name" --config "$config" >/dev/null 2>&1
  then action=update; else action=create; fi
fi
mkdir -p "$(dirname "$out")"
modelpack deploy "$action" -t "$target" --name "$name" -m "$model" --config "$config" \\
  --timeout "$timeout" --json > "$out"
cat "$out"
"""


def _kfp() -> Any:
    try:
        import kfp
        from kfp import dsl  # noqa: F401 (kfp.dsl is a submodule: imported for the callers)
    except ImportError as exc:
        raise MissingDependencyError(
            "Kubeflow Pipelines components need the kfp SDK: pip install 'kfp>=2.17,<3'",
            package="kfp",
        ) from exc
    return kfp


def default_packages() -> list[str]:
    """What a lightweight component installs by default: this modelpack release, no extras."""
    return [f"modelpack=={__version__}"]


def batch_component(image: str) -> Any:
    """A container component running ``modelpack batch`` on ``image`` (a modelpack image).

    Inputs: ``model_uri`` (a path in the image, such as ``/opt/ml/model`` where
    ``build-image`` bakes the model, or ``models:/``, ``oci://``, ``s3://``), ``input_data``
    (a Dataset), ``input_format`` and ``output_format`` (csv, parquet or jsonl), ``batch_size``,
    ``workers``, ``columns``, ``passthrough`` (comma-separated) and ``on_error``; output:
    ``predictions`` (a Dataset).
    """
    dsl = _kfp().dsl
    from kfp.dsl import ContainerSpec, Dataset, Input, Output

    _check_image(image)

    @dsl.container_component  # type: ignore[untyped-decorator]
    def modelpack_batch(
        model_uri: str,
        input_data: Input[Dataset],
        predictions: Output[Dataset],
        input_format: str = "csv",
        output_format: str = "csv",
        batch_size: int = 65536,
        workers: int = 1,
        columns: Optional[str] = None,  # noqa: UP045
        passthrough: Optional[str] = None,  # noqa: UP045
        on_error: str = "fail",
    ) -> ContainerSpec:
        def when(name: str, flag: str, value: Any) -> Any:
            return dsl.IfPresentPlaceholder(input_name=name, then=[flag, value])

        return ContainerSpec(
            image=image,
            command=["modelpack", "batch"],
            args=[
                model_uri,
                input_data.path,
                predictions.path,
                "--input-format",
                input_format,
                "--format",
                output_format,
                "--batch-size",
                batch_size,
                "--workers",
                workers,
                "--on-error",
                on_error,
                "--no-progress",
                when("columns", "--columns", columns),
                when("passthrough", "--passthrough", passthrough),
            ],
        )

    return modelpack_batch


def deploy_component(image: str) -> Any:
    """A container component running ``modelpack deploy`` on ``image``.

    Inputs: ``target`` (a deployer name), ``name``, ``model_uri``, ``options`` (the target's
    options, as ``-C``/``--config`` take them), ``action`` (create, update or apply: update
    when the deployment exists, else create) and ``timeout`` (seconds to wait until ready);
    output: ``deployment`` (the deployment as ``deploy get --json`` prints it).
    """
    dsl = _kfp().dsl
    from kfp.dsl import ContainerSpec, OutputPath

    _check_image(image)

    @dsl.container_component  # type: ignore[untyped-decorator]
    def modelpack_deploy(
        target: str,
        name: str,
        model_uri: str,
        deployment: OutputPath(str),  # type: ignore[valid-type]
        options: Optional[dict] = None,  # type: ignore[type-arg]  # noqa: UP045
        action: str = "apply",
        timeout: float = 600.0,
    ) -> ContainerSpec:
        return ContainerSpec(
            image=image,
            command=["sh", "-c", _DEPLOY_SCRIPT, "modelpack-deploy"],
            args=[
                deployment,
                action,
                target,
                name,
                model_uri,
                timeout,
                dsl.IfPresentPlaceholder(input_name="options", then=[options]),
            ],
        )

    return modelpack_deploy


# The two forms of a step repeat one signature on purpose: kfp reads each from its own function
# (and copies the lightweight one's source into the component), so they cannot share a def.


def batch_python_component(
    *, packages_to_install: list[str] | None = None, base_image: str = DEFAULT_BASE_IMAGE
) -> Any:
    """``batch_component``'s step as a lightweight Python component (modelpack from pip).

    ``packages_to_install`` defaults to this modelpack release; add the extras the model
    needs (``modelpack[sklearn,s3]``) or pin your own index's build.
    """
    dsl = _kfp().dsl
    from kfp.dsl import Dataset, Input, Output

    def modelpack_batch(
        model_uri: str,
        input_data: Input[Dataset],
        predictions: Output[Dataset],
        input_format: str = "csv",
        output_format: str = "csv",
        batch_size: int = 65536,
        workers: int = 1,
        columns: Optional[str] = None,  # noqa: UP045
        passthrough: Optional[str] = None,  # noqa: UP045
        on_error: str = "fail",
    ) -> None:
        from modelpack.batch import score

        def names(value: Optional[str]) -> list[str]:  # noqa: UP045
            return [n.strip() for n in (value or "").split(",") if n.strip()]

        summary = score(
            model_uri,
            input_data.path,
            predictions.path,
            format=output_format,
            input_format=input_format,
            batch_size=batch_size,
            workers=workers,
            columns=names(columns) or None,
            passthrough=names(passthrough),
            on_error=on_error,
        )
        predictions.metadata.update(
            {
                "model_uri": model_uri,
                "format": output_format,
                "rows": summary.rows,
                "scored_rows": summary.scored_rows,
                "failed_rows": summary.failed_rows,
            }
        )
        print(f"scored {summary.scored_rows} of {summary.rows} rows with {model_uri}")

    return dsl.component(
        modelpack_batch,
        base_image=base_image,
        packages_to_install=_packages(packages_to_install),
    )


def deploy_python_component(
    *, packages_to_install: list[str] | None = None, base_image: str = DEFAULT_BASE_IMAGE
) -> Any:
    """``deploy_component``'s step as a lightweight Python component (modelpack from pip).

    The deployer's extra belongs in ``packages_to_install`` (``modelpack[kubernetes]``).
    """
    dsl = _kfp().dsl
    from kfp.dsl import OutputPath

    def modelpack_deploy(
        target: str,
        name: str,
        model_uri: str,
        deployment: OutputPath(str),  # type: ignore[valid-type]
        options: Optional[dict] = None,  # type: ignore[type-arg]  # noqa: UP045
        action: str = "apply",
        timeout: float = 600.0,
    ) -> None:
        import json

        from modelpack import deploy
        from modelpack.errors import DeploymentError, InvalidInputError

        if action not in ("create", "update", "apply"):
            raise InvalidInputError(f"unknown action {action!r}; choose create, update or apply")
        if action == "apply":
            try:
                deploy.get(target, name, options)
                action = "update"
            except DeploymentError:
                action = "create"
        step = deploy.update if action == "update" else deploy.create
        result = step(target, name, model_uri, options, timeout=timeout)
        text = json.dumps(result.to_dict(), indent=2, default=str)
        with open(deployment, "w", encoding="utf-8") as out:
            out.write(text)
        print(text)

    return dsl.component(
        modelpack_deploy,
        base_image=base_image,
        packages_to_install=_packages(packages_to_install),
    )


def write_component(component: Any, path: str | os.PathLike[str]) -> Path:
    """Compile ``component`` to KFP's IR YAML at ``path`` (what kfp's loaders read)."""
    from kfp import compiler

    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{target} is a directory; give a file name such as component.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(component, package_path=str(target))
    return target


def _check_image(image: str) -> None:
    if not image.strip() or any(c.isspace() for c in image):
        raise InvalidInputError(
            f"{image!r} is not an image reference; give one such as registry/model:1 "
            "(`modelpack build-image` builds it)"
        )


def _packages(given: list[str] | None) -> list[str]:
    # [] is allowed: a base image that already holds modelpack.
    return default_packages() if given is None else [p.strip() for p in given if p.strip()]
