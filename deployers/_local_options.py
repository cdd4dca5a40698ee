"""The local target's ``-C key=value`` options: their help texts, defaults and checks."""

from __future__ import annotations

from typing import Any

from modelpack.errors import InvalidInputError

RUNTIMES = ("native", "onnx")

INT_OPTIONS = {"port": (1, 65535), "workers": (1, 1024), "max_batch_size": (0, 1 << 20)}
FLOAT_OPTIONS = ("max_latency_ms", "rtol", "atol")
DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "workers": 1,
    "max_batch_size": 0,
    "max_latency_ms": 5.0,
    "runtime": "native",
}


def described(runtime: str | None, device: str) -> dict[str, str]:
    options = {
        "port": "port to bind [default: a free one; update moves to a new one]",
        "host": "interface to bind [default: 127.0.0.1]",
        "workers": "server processes, each with the model [default: 1]",
        "max_batch_size": "rows per merged predict call; 0 turns batching off [default: 0]",
        "max_latency_ms": "longest wait for a batch to fill [default: 5]",
    }
    if runtime is None:
        options["runtime"] = (
            "native (the model's flavor) or onnx (its onnx flavor on ONNX Runtime, converted "
            "first when it has none) [default: native]"
        )
    options.update(
        device="cpu, cuda or cuda:N; with runtime onnx also auto (cuda when ONNX Runtime has "
        f"CUDA, else cpu) [default: {device}]",
        rtol="runtime onnx: relative tolerance of the conversion's parity gate [default: 1e-4]",
        atol="runtime onnx: absolute tolerance of the conversion's parity gate [default: 1e-5]",
        trust="what the server may run when it loads the model: true (everything) or "
        "NAME[,NAME] exact types/classes; written into its command line [default: nothing]",
    )
    return options


def checked(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` typed and checked (one line naming the option when one is wrong)."""
    for key, (low, high) in INT_OPTIONS.items():
        if key in options:
            options[key] = _number(key, options[key], int, low, high)
    for key in FLOAT_OPTIONS:
        if key in options:
            options[key] = _number(key, options[key], float)
    options.setdefault("runtime", "native")
    if options["runtime"] not in RUNTIMES:
        raise InvalidInputError(f"runtime must be native or onnx, got {options['runtime']!r}")
    device = str(options.get("device", "cpu")).lower()
    kind, sep, index = device.partition(":")
    numbered = kind == "cuda" and index.isdigit()
    if kind not in ("auto", "cpu", "cuda") or (sep and not numbered):
        raise InvalidInputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if kind == "auto" and options["runtime"] != "onnx":
        raise InvalidInputError("device auto needs runtime onnx; use cpu, cuda or cuda:N")
    options["device"] = device
    return options


def _number(
    key: str, value: Any, kind: type[int] | type[float], low: float = 0, high: float = 1e12
) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"option {key} must be a number, got {value!r}") from None
    if isinstance(value, float) and kind is int and number != value:
        raise InvalidInputError(f"option {key} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise InvalidInputError(f"option {key} must be between {low:g} and {high:g}, got {value!r}")
    return number
