"""``modelpack runs ...``: list, show and compare tracking runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from modelpack.cli._output import echo_json, table, when

runs_app = typer.Typer(help="Tracking runs: params, metrics and tags.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def _duration(run: Any) -> str:
    if run.end_time is None:
        return "-"
    return f"{(run.end_time - run.start_time) / 1000:.1f}s"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@runs_app.command("list")
def list_runs(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Runs, newest first."""
    from modelpack.tracking import search_runs

    found = search_runs(experiment, max_results=limit)
    if as_json:
        echo_json([run.to_dict() for run in found])
        return
    table(
        ("run_id", "experiment", "name", "status", "started", "duration", "parent"),
        [
            (r.id, r.experiment, r.name, r.status, when(r.start_time), _duration(r), r.parent_id)
            for r in found
        ],
    )


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="A run id.")], as_json: JsonOpt = False
) -> None:
    """One run: its info, params, latest metrics and tags."""
    from modelpack.tracking import get_run, list_artifacts

    run = get_run(run_id)
    artifacts = list_artifacts(run_id)
    if as_json:
        body = run.to_dict()
        body["artifacts"] = {p: {"sha256": s, "size": n} for p, (s, n) in artifacts.items()}
        echo_json(body)
        return
    info = [
        ("run_id", run.id),
        ("experiment", run.experiment),
        ("name", run.name),
        ("status", run.status),
        ("started", when(run.start_time)),
        ("ended", when(run.end_time)),
        ("duration", _duration(run)),
        ("parent", run.parent_id),
    ]
    table(("field", "value"), info)
    for title, values in (("param", run.params), ("metric", run.metrics), ("tag", run.tags)):
        if values:
            table((title, "value"), [(k, _value(v)) for k, v in values.items()])
    if artifacts:
        table(("artifact", "size"), [(p, n) for p, (_s, n) in artifacts.items()])


@runs_app.command("compare")
def compare_runs(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    as_json: JsonOpt = False,
) -> None:
    """Params and final metrics of several runs side by side."""
    from modelpack.tracking import get_run

    found = [get_run(run_id) for run_id in run_ids]
    if as_json:
        echo_json({"runs": [run.to_dict() for run in found]})
        return
    columns = ["", *(f"{r.name or r.id[:8]} ({r.id[:8]})" for r in found)]
    table(columns, _side_by_side("param", [r.params for r in found]))
    table(columns, _side_by_side("metric", [r.metrics for r in found]))


def _side_by_side(kind: str, values: Sequence[dict[str, Any]]) -> list[list[str]]:
    keys = sorted({key for per_run in values for key in per_run})
    rows = []
    for key in keys:
        cells = [_value(per_run.get(key)) for per_run in values]
        differs = len(set(cells)) > 1
        rows.append([f"{kind} {key}{' *' if differs else ''}", *cells])
    return rows
