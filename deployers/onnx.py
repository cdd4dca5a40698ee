"""The ``onnx`` target: the local target with ``runtime=onnx`` and ``device=auto`` preset.

Kept for one release (``-t local -C runtime=onnx -C device=auto`` does the same); its
deployments stay in ``$MODELPACK_HOME/deployments/onnx/``. See ``modelpack.deployers.local``.
"""

from __future__ import annotations

from modelpack.deployers.local import LocalDeployer

# The entry point: an instance with a preset, not a subclass overriding the local target.
onnx_target = LocalDeployer("onnx", runtime="onnx", device="auto")

__all__ = ["onnx_target"]
