"""Graph surgery on converted models: outputs kept and reshaped, a matrix built from columns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from modelpack.errors import ConversionError

if TYPE_CHECKING:
    import onnx


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    """Drop every graph output not in ``names`` (their nodes stay, unused, and ORT prunes them)."""
    kept = [o for o in model.graph.output if o.name in names]
    if len(kept) != len(names):
        found = [o.name for o in model.graph.output]
        raise ConversionError(f"the converted graph has outputs {found}, not {names}")
    del model.graph.output[:]
    model.graph.output.extend(kept)


def match_output_shapes(
    model: onnx.ModelProto,
    source: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Reshape 2-D graph outputs (``(n, 1)``, ``(1, n)``) to ``(n,)`` where the source is 1-D.

    The parity gate then compares shapes exactly: a reshape that put values in the wrong
    places shows as different values, never as a silently different answer. ``actual`` (what
    the graph really returned on the same rows) catches 2-D answers the graph declares as 1-D.
    """
    from onnx import helper, numpy_helper

    for output in model.graph.output:
        want = source.get(output.name)
        dims = output.type.tensor_type.shape.dim
        got = (actual or {}).get(output.name)
        runs_2d = got is not None and got.ndim == 2 and 1 in got.shape
        if want is None or want.ndim != 1 or not (len(dims) == 2 or runs_2d):
            continue
        name = output.name
        inner = f"{name}__column"
        _rename_values(model.graph, {name: inner})
        output.name = name  # the Reshape's output
        shape = numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{output.name}__shape")
        model.graph.initializer.append(shape)
        model.graph.node.append(helper.make_node("Reshape", [inner, shape.name], [output.name]))
        if len(dims) != 2:
            continue  # declared 1-D already
        keep = dims[0] if dims[1].dim_value == 1 else None  # (n, 1) keeps its batch dimension
        if keep is None:
            del dims[:]
            dims.add()
        else:
            del dims[1]


def concat_columns(
    model: onnx.ModelProto,
    matrix: str,
    columns: Sequence[tuple[str, onnx.TypeProto]],
    order: Sequence[str],
) -> None:
    """Replace the input ``matrix`` by one input per column, cast to its type and concatenated."""
    from onnx import helper

    graph = model.graph
    names = {name for name, _ in columns}
    clash = sorted(names & {o.name for o in graph.output})
    if clash:
        raise ConversionError(
            f"column {clash[0]!r} has the name of an output of the converted graph; rename it"
        )
    used = _value_names(graph)
    taken = used | names
    # The graph's own values named like a column (say "intercept") move out of its way.
    _rename_values(graph, {n: fresh_name(n, taken) for n in sorted(names & used - {matrix})})
    elem = next(i for i in graph.input if i.name == matrix).type.tensor_type.elem_type
    types = dict(columns)
    front, parts = [], []
    for name in order:
        if types[name].tensor_type.elem_type == elem:
            parts.append(name)
            continue
        cast = fresh_name(f"{name}_cast", taken)
        front.append(helper.make_node("Cast", [name], [cast], name=cast, to=elem))
        parts.append(cast)
    front.append(
        helper.make_node("Concat", parts, [matrix], name=fresh_name("concat", taken), axis=1)
    )
    inputs = [helper.make_value_info(name, t) for name, t in columns]
    others = [i for i in graph.input if i.name != matrix]
    del graph.input[:]
    graph.input.extend([*inputs, *others])
    nodes = [*front, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", 13))


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_N`` where that is taken; added to ``taken``."""
    name, i = base, 0
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    names.update(t.name for t in graph.initializer)
    names.update(s.values.name for s in graph.sparse_initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    for sub in _subgraphs(graph):
        names |= _value_names(sub)
    names.discard("")
    return names


def _rename_values(graph: onnx.GraphProto, renames: Mapping[str, str]) -> None:
    if not renames:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = renames.get(value.name, value.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = renames.get(sparse.values.name, sparse.values.name)
    for sub in _subgraphs(graph):
        _rename_values(sub, renames)
