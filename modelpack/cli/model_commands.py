"""``inspect``, ``verify``, ``predict`` and ``plugins``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from modelpack.cli._input import read_input
from modelpack.cli._output import fail
from modelpack.cli._trust import TrustFlag, TrustPickle, TrustTypes, trust_arg
from modelpack.errors import (
    IntegrityError,
    ModelpackError,
    PredictionError,
)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_model)
    app.command("verify")(verify_model)
    app.command("predict")(predict)
    app.command("plugins")(list_plugins)


def _echo_json(obj: Any) -> None:
    typer.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def inspect_model(
    uri: Annotated[str, typer.Argument(help="Model path or URI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the descriptor as JSON.")] = False,
) -> None:
    """Show a model's descriptor: flavors, signature, environment, files."""
    from modelpack.descriptor import Descriptor
    from modelpack.trust import descriptor_digest
    from modelpack.uris import resolve

    path = resolve(uri)
    descriptor = Descriptor.read(path)
    data = descriptor.to_dict()
    data["digest"] = f"sha256:{descriptor_digest(path)}"
    if as_json:
        _echo_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]model[/bold] {data['model_id']}  (loader: {data['loader']})")
    console.print(
        f"created {data['created_at']} with modelpack {data['modelpack_version']}, "
        f"format {data['format_version']}"
    )
    console.print(f"digest {data['digest']}", highlight=False, soft_wrap=True)
    trust = data["trust"]
    if trust is None:
        console.print("executes code: unknown (saved before modelpack recorded it; run scan)")
    else:
        needs = [f"{n['kind']} {n['name']}" for n in trust.get("needs", [])]
        listed = f": {', '.join(needs)}" if needs else ""
        verdict = "yes, loading needs trust for" if needs else "no"
        console.print(
            f"executes code: {verdict}{listed}", highlight=False, markup=False, soft_wrap=True
        )
    for name, config in data["flavors"].items():
        details = ", ".join(
            f"{k}={v}" for k, v in config.items() if not isinstance(v, (dict, list))
        )
        console.print(f"flavor [bold]{name}[/bold]: {details}")
    if data["parent"]:
        console.print(f"parent: {data['parent']}")
    sig = data["signature"]
    if sig:
        for part in ("inputs", "outputs"):
            schema = sig.get(part)
            if not schema:
                continue
            table = Table(title=part, title_justify="left")
            if schema["type"] == "columns":
                for col in ("name", "type", "required"):
                    table.add_column(col)
                for c in schema["columns"]:
                    table.add_row(c["name"], c["type"], str(c["required"]))
            else:
                for col in ("name", "dtype", "shape"):
                    table.add_column(col)
                for t in schema["tensors"]:
                    table.add_row(str(t["name"] or "-"), t["dtype"], str(t["shape"]))
            console.print(table)
    else:
        console.print("signature: none")
    env = data["environment"]
    console.print(f"python {env.get('python', '?')}, requirements in {env.get('requirements')}")
    if data["metadata"]:
        console.print(f"metadata: {data['metadata']}")
    total = sum(f["size"] for f in data["files"].values())
    console.print(f"{len(data['files'])} files, {total:,} bytes")


def verify_model(
    uri: Annotated[str, typer.Argument(help="Model path or URI.")],
    digest: Annotated[
        str | None,
        typer.Option(help="The model's expected digest (sha256:...), as a registry records it."),
    ] = None,
) -> None:
    """Check the descriptor and every file against the manifest; exit 0 when intact, 1 when not."""
    from modelpack.descriptor import Descriptor, verify_manifest
    from modelpack.model import check_digest
    from modelpack.trust import descriptor_digest
    from modelpack.uris import resolve

    path = resolve(uri)
    try:
        if digest is not None:
            check_digest(path, digest)
        descriptor = Descriptor.read(path)  # its checksum: edited after save?
        verify_manifest(path, descriptor.files)
    except IntegrityError as exc:
        raise fail(exc, exit_code=1) from None
    typer.echo(
        f"ok: {len(descriptor.files)} files match the manifest of {path} "
        f"(digest sha256:{descriptor_digest(path)})"
    )


def predict(
    model_uri: Annotated[str, typer.Option("-m", "--model-uri", help="Model path or URI.")],
    input_file: Annotated[
        Path, typer.Option("-i", "--input", help="JSON or CSV file, - for stdin.")
    ],
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (.csv or .json).")
    ] = None,
    trust: TrustFlag = False,
    trust_type: TrustTypes = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """Predict with a model on a JSON (MLflow formats) or CSV file."""
    import modelpack
    from modelpack.payload import to_jsonable

    data = read_input(input_file)
    model = modelpack.load(model_uri, trust=trust_arg(trust, trust_type, trust_pickle))
    try:
        predictions = model.predict(data)
    except ModelpackError:
        raise
    except Exception as exc:  # the model's own error (sklearn on a NaN...): one line, exit 2
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise PredictionError(f"the model failed on {input_file}: {reason}") from exc
    if output_file is not None and output_file.suffix.lower() == ".csv":
        import numpy as np
        import pandas as pd

        from modelpack.signature import is_sparse

        if is_sparse(predictions):  # dense in a file, as on the wire
            predictions = predictions.toarray()
        frame = (
            predictions
            if isinstance(predictions, pd.DataFrame)
            else pd.DataFrame({"prediction": list(np.asarray(predictions))})
        )
        frame.to_csv(output_file, index=False)
        return
    body = orjson.dumps({"predictions": to_jsonable(predictions)})
    if output_file is None:
        typer.echo(body.decode())
    else:
        output_file.write_bytes(body + b"\n")


def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List installed flavors, servers, deployers and tracking hooks with their distributions."""
    from dataclasses import asdict

    from modelpack import plugins

    infos = [info for kind in plugins.GROUPS for info in plugins.list_plugins(kind)]
    if as_json:
        _echo_json([asdict(i) for i in infos])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("kind", "name", "distribution", "version", "object"):
        table.add_column(col)
    for info in infos:
        table.add_row(info.kind, info.name, info.distribution, info.version, info.value)
    Console(width=200).print(table)


__all__ = ["ModelpackError", "register"]
