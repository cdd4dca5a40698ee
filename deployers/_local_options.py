"""The local target's ``-C key=value`` options: their help texts, defaults and checks."""

from __future__ import annotations

from typing import Any

from modelpack.errors import InvalidInputError

RUNTIMES = ("native", "onnx")

INT_OPTIONS = {"port": (1, 65535), "workers": (1, 1024), "max_batch_size": (0, 1 << 20)}
FLOAT_OPTIONS = ("max_latency_ms", "rtol", "atol")
# The options of a many-models deployment (a model set), as `modelpack serve` takes them.
MODEL_SET_OPTIONS = ("lazy", "max_memory", "follow_aliases", "model_config")
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
    if runtime != "onnx":  # a many-models server serves each model's own flavor
        options.update(
            lazy="many models: load each model on its first request [default: false]",
            max_memory="many models: budget for the models loaded at once (bytes, 500MB, 2GB, "
            "1GiB); the least recently used are unloaded to make room [default: none]",
            follow_aliases="many models: poll the registry every SECONDS and switch a "
            "models:/NAME@ALIAS model when its alias moves (serve's --follow-aliases) "
            "[default: off]",
            model_config="many models: YAML file of per-model settings (max_batch_size, ...; "
            "docs/serving.md) [default: none]",
            model="predict: the model (by name) of a many-models deployment that answers",
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


def checked_for_set(options: dict[str, Any], many: bool) -> dict[str, Any]:
    """The many-models options typed and checked; refused for a deployment of one model."""
    given = [k for k in MODEL_SET_OPTIONS if options.get(k) not in (None, False)]
    if not many:
        if given:
            raise InvalidInputError(
                f"option(s) {', '.join(given)} apply to several models: give -m NAME=URI "
                "(repeatable) or --repository"
            )
        return options
    if options["runtime"] == "onnx":
        raise InvalidInputError(
            "runtime onnx serves one model per deployment: give one model, or serve the set "
            "with runtime native"
        )
    if options["workers"] != 1:
        raise InvalidInputError(
            "a many-models deployment runs one worker (a load, unload or memory budget holds "
            "for the whole server): leave out workers"
        )
    if "lazy" in options:
        from modelpack.deploy import option_bool

        options["lazy"] = option_bool("lazy", options["lazy"])
    if options.get("max_memory") is not None:
        from modelpack.cli.serve_commands import parse_size

        parse_size(str(options["max_memory"]))  # refused here, not by a server that exits
        options["max_memory"] = str(options["max_memory"])
    if options.get("follow_aliases") is not None:
        options["follow_aliases"] = _number("follow_aliases", options["follow_aliases"], float, 0.1)
    if options.get("model_config") is not None:
        from pathlib import Path

        path = Path(str(options["model_config"])).expanduser().resolve()
        if not path.is_file():
            raise InvalidInputError(f"option model_config: no such file {path}")
        options["model_config"] = str(path)  # the server runs in another directory
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
