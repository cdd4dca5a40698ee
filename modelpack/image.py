"""Container images of a model: a Dockerfile and context, built with docker, podman or buildah.

The image runs ``modelpack serve serve`` (the SageMaker serving contract: port 8080, ``/ping``,
``/invocations``) as a non-root user, with the model baked in at ``/opt/ml/model`` or fetched from
the artifact store when it starts.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelpack import _dockerfile
from modelpack._image_requirements import constraints, model_requirements, modelpack_requirement
from modelpack.errors import DeploymentError, InvalidInputError

ENGINES = ("docker", "podman", "buildah")
DEFAULT_BASE_IMAGE = "python:3.11-slim"
_REMOTE_SCHEMES = ("models:", "runs:", "s3:", "oci:")


@dataclass(frozen=True)
class ImageOptions:
    base_image: str = DEFAULT_BASE_IMAGE
    gpu: bool = False
    fetch_model: bool = False  # fetch from the artifact store at start instead of baking in
    modelpack_wheel: Path | None = None  # reuse a built modelpack wheel
    trust: bool | tuple[str, ...] | None = None  # written into the entry point, never implied
    insecure: bool = False  # plain HTTP to the oci:// model's registry when baking it in


def write_context(model_uri: str, dest: Path, options: ImageOptions = ImageOptions()) -> Path:
    """Write the Dockerfile and build context for ``model_uri`` into ``dest`` (made empty)."""
    from modelpack.descriptor import Descriptor
    from modelpack.uris import resolve

    if options.fetch_model and not model_uri.startswith(_REMOTE_SCHEMES):
        raise InvalidInputError(
            f"--fetch-model needs a models:/, runs:/, s3:// or oci:// URI the container can "
            f"reach, not {model_uri!r}"
        )
    baked_from_oci = model_uri.startswith("oci:") and not options.fetch_model
    if options.insecure and not baked_from_oci:
        raise InvalidInputError("--insecure applies to an oci:// model baked into the image")
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInputError(f"context directory {dest} is not empty; give a new or empty one")
    model_dir, digest = (
        _model(model_uri, dest, options) if baked_from_oci else (resolve(model_uri), None)
    )
    descriptor = Descriptor.read(model_dir)
    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / "wheels"
    wheels.mkdir()
    requirements = model_requirements(model_dir, gpu=options.gpu)
    if options.fetch_model and model_uri.startswith("s3:"):
        requirements.append("boto3")
    pins = constraints(requirements)
    requirements.insert(0, modelpack_requirement(wheels, options.modelpack_wheel))
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (dest / "constraints.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    (dest / _dockerfile.CA_FILE).write_text("", encoding="utf-8")
    if not options.fetch_model and not baked_from_oci:
        shutil.copytree(model_dir, dest / "model")
    from modelpack.trust import cli_args

    entrypoint = ["modelpack", "serve", *cli_args(options.trust)]
    if options.gpu and "onnx" in descriptor.flavors:
        entrypoint += ["--runtime", "onnx", "--device", "cuda"]
    (dest / "Dockerfile").write_text(
        _dockerfile.render(
            base_image=options.base_image,
            model_uri=model_uri,
            model_id=descriptor.model_id,
            bake_model=not options.fetch_model,
            entrypoint=entrypoint,
            model_digest=digest,
        ),
        encoding="utf-8",
    )
    (dest / ".dockerignore").write_text("**/__pycache__\nbuild.log\n", encoding="utf-8")
    return dest


def _model(model_uri: str, dest: Path, options: ImageOptions) -> tuple[Path, str]:
    """An oci:// model pulled (and verified) on this host straight into the context, and its
    manifest digest: the image records it, so a tag moved later still says what it holds."""
    from modelpack import oci

    dest.mkdir(parents=True, exist_ok=True)
    pulled = oci.pull(model_uri, dest / "model", insecure=options.insecure)
    return Path(pulled.path), pulled.digest


def find_engine(preferred: str | None = None) -> str:
    """``preferred`` if installed, else the first of docker, podman and buildah found."""
    if preferred is not None:
        if preferred not in ENGINES:
            raise InvalidInputError(
                f"unknown engine {preferred!r} (choose from {', '.join(ENGINES)})"
            )
        if shutil.which(preferred) is None:
            raise DeploymentError(
                f"{preferred} is not installed; install it (e.g. apt-get install "
                f"{'docker.io' if preferred == 'docker' else preferred}) or pick another --engine"
            )
        return preferred
    for engine in ENGINES:
        if shutil.which(engine) and (engine != "docker" or _docker_daemon()):
            return engine
    raise DeploymentError(
        "no container engine found; install docker, podman or buildah "
        "(e.g. apt-get install podman), or write the context with --context-only"
    )


def _docker_daemon() -> bool:
    # The docker CLI is often installed without a daemon to talk to; podman needs none.
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def build_command(
    engine: str,
    context: Path,
    tag: str,
    *,
    network: str | None = None,
    ca_bundle: Path | None = None,
) -> list[str]:
    if ca_bundle is not None:
        shutil.copyfile(ca_bundle, context / _dockerfile.CA_FILE)
    cmd = ["buildah", "build", "--layers"] if engine == "buildah" else [engine, "build"]
    cmd += ["-t", tag, "-f", str(context / "Dockerfile")]
    if network:
        cmd += ["--network", network]
    return [*cmd, str(context)]


def build_image(
    context: Path,
    tag: str,
    *,
    engine: str | None = None,
    network: str | None = None,
    ca_bundle: Path | None = None,
    log: Path | None = None,
) -> str:
    """Build the context with an engine; returns the engine used. Build output goes to ``log``."""
    chosen = find_engine(engine)
    cmd = build_command(chosen, context, tag, network=network, ca_bundle=ca_bundle)
    log_path = log or context / "build.log"
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        tail = " | ".join(lines[-3:]) or "no output"
        raise DeploymentError(
            f"{chosen} build exited {proc.returncode}: {tail} (full log: {log_path})"
        )
    return chosen
