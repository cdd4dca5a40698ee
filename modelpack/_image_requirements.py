"""What an image installs: the model's pinned requirements and modelpack itself.

modelpack comes from a wheel built from the source checkout it runs from, or from the index at
the running version when it was installed from a wheel. Every distribution the server needs is
constrained to the version installed here, so the image runs what was tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from modelpack._version import __version__
from modelpack.errors import DeploymentError

_NOT_BUILT = {".git", ".venv", "build", "dist", "tests", "benchmarks", "examples", "docs", ".ci"}
_JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*_cache")
# The CPU and GPU builds of ONNX Runtime both provide the module `onnxruntime`: never both.
_GPU_SWAP = {"onnxruntime": "onnxruntime-gpu"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def model_requirements(model_dir: Path, *, gpu: bool) -> list[str]:
    """The model's requirements.txt less modelpack (installed separately), GPU-swapped."""
    path = model_dir / "requirements.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    out: list[str] = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise DeploymentError(f"{path}: unreadable requirement {text!r}: {exc}") from None
        key = normalize(req.name)
        if key == "modelpack":
            continue
        if gpu and key in _GPU_SWAP:
            req.name = _GPU_SWAP[key]
        out.append(str(req))
    return out


def constraints(requirements: list[str]) -> list[str]:
    """``name==version`` for modelpack's core dependencies and the model's, transitively."""
    pins: dict[str, str] = {}
    todo = [Requirement(r) for r in requirements]
    todo += [Requirement(r) for r in metadata.requires("modelpack") or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = normalize(req.name)
        if key in pins or key == "modelpack":
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (e.g. onnxruntime-gpu): let pip pick it
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        todo += [Requirement(r) for r in dist.requires or []]
        for extra in req.extras:
            todo += _extra_requirements(dist.requires or [], extra)
    return [pins[k] for k in sorted(pins)]


def _extra_requirements(requires: list[str], extra: str) -> list[Requirement]:
    out = []
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": extra}):
            req.marker = None  # already evaluated for this platform and extra
            out.append(req)
    return out


def source_checkout() -> Path | None:
    """The checkout modelpack runs from, or None when it was installed from a wheel."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(
        r'(?m)^name\s*=\s*"modelpack"\s*$', pyproject.read_text(encoding="utf-8")
    ):
        return root
    return None


def modelpack_requirement(wheels: Path, wheel: Path | None = None) -> str:
    """Put a modelpack wheel into ``wheels`` (built from the checkout) and name it for pip."""
    if wheel is None:
        source = source_checkout()
        if source is None:
            return f"modelpack=={__version__}"
        wheel = build_wheel(source, wheels)
    elif wheel.parent != wheels:
        shutil.copy2(wheel, wheels / wheel.name)
    return f"modelpack @ file:///opt/modelpack/build/wheels/{wheel.name}"


def build_wheel(source: Path, out_dir: Path) -> Path:
    """A wheel of ``source``, built from a copy so the checkout gets no build/ or egg-info."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(_JUNK(directory, names))
        if Path(directory) == source:
            skipped |= _NOT_BUILT & set(names)
        return skipped

    with tempfile.TemporaryDirectory(prefix="modelpack-wheel-") as tmp:
        copy = shutil.copytree(source, Path(tmp) / "src", ignore=ignore)
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
        if uv:
            cmd = [uv, "build", "--wheel", "--out-dir", str(out_dir), str(copy)]
        else:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out_dir), str(copy)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise DeploymentError(f"building the modelpack wheel failed: {' | '.join(tail)}")
    found = sorted(out_dir.glob("modelpack-*.whl"))
    if not found:
        raise DeploymentError(f"building the modelpack wheel left no wheel in {out_dir}")
    return found[-1]
