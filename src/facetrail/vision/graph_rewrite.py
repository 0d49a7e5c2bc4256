"""Exact, in-memory rewrites of model graphs that make onnxruntime faster on x86 CPUs.

The weights file on disk is never changed (its sha256 stays the pinned one);
the session is built from the rewritten bytes.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # onnx is imported only when a graph is rewritten
    from onnx import GraphProto


def cpu_rewrite_applies(providers: list[str]) -> bool:
    """True on x86 when the CPU provider runs the model (the layout gain is x86-specific)."""
    return providers[:1] == ["CPUExecutionProvider"] and platform.machine().lower() in {"x86_64", "amd64"}


def recogniser_for_x86(path: Path) -> bytes:
    """The model with both exact rewrites below: PRelu as convs, and convs on channel pairs as depthwise ones."""
    return _rewritten(path, _rewrite_prelu, _rewrite_paired_groups)


def prelu_as_convs(path: Path) -> bytes:
    """The model with its PRelu nodes rewritten only (``_rewrite_prelu``); bench/engine_stages.py compares it."""
    return _rewritten(path, _rewrite_prelu)


def _rewritten(path: Path, *rewrites: Callable[[GraphProto], None]) -> bytes:
    """The serialised model at ``path`` after each in-place graph rewrite, in order."""
    import onnx

    model = onnx.load(str(path))
    for rewrite in rewrites:
        rewrite(model.graph)
    serialised: bytes = model.SerializeToString()
    return serialised


def _rewrite_prelu(graph: GraphProto) -> None:
    """Every PRelu(x, a) written as Relu(x) + DWConv_{-a}(Relu(DWConv_{-1}(x))), in place.

    The same function: the two Relu branches never overlap, and multiplying by
    -1 or -a is exact. But onnxruntime's blocked NCHWc layout on x86 supports
    Relu, Conv and Add and not PRelu, so the stock w600k_mbf graph converts
    layouts around each of its 34 PRelu nodes; without them the recogniser
    runs about 30% faster (bench/engine_stages.py) with embeddings within
    1e-6 of the stock graph's.
    """
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in weights:
            nodes.append(node)
            continue
        x, slope_name = node.input
        slope = numpy_helper.to_array(weights[slope_name]).reshape(-1).astype(np.float32)
        channels, name = slope.size, node.output[0]
        for suffix, values in (("neg", -np.ones_like(slope)), ("slope", -slope)):
            graph.initializer.append(numpy_helper.from_array(values.reshape(channels, 1, 1, 1),
                                                             f"{name}_{suffix}_w"))
        nodes += [
            helper.make_node("Relu", [x], [f"{name}_pos"]),
            helper.make_node("Conv", [x, f"{name}_neg_w"], [f"{name}_negx"], group=channels, kernel_shape=[1, 1]),
            helper.make_node("Relu", [f"{name}_negx"], [f"{name}_negr"]),
            helper.make_node("Conv", [f"{name}_negr", f"{name}_slope_w"], [f"{name}_negpart"], group=channels,
                             kernel_shape=[1, 1]),
            helper.make_node("Add", [f"{name}_pos", f"{name}_negpart"], [name]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)


def _rewrite_paired_groups(graph: GraphProto) -> None:
    """Every Conv whose groups hold two input and two output channels, as two depthwise Convs, in place.

    Output channel c of group g = c // 2 sums its own input channel c (weight w[c, c % 2]) and its partner
    c ^ 1 (weight w[c, 1 - c % 2]): Conv_dw(x, w_own) + Conv_dw(x[:, partner], w_partner), the bias on the
    first. onnxruntime runs a convolution with two channels per group as 64 small matrix products (1.5 ms
    of w600k_mbf's 11 at 56x56x128, its costliest layer); depthwise, a channel gather and an add take about
    0.6 ms. Embeddings within 2e-6 of the stock graph's, about 12% less time per face (bench/engine_stages.py).
    """
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in graph.initializer}
    nodes = []
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        groups = attributes.get("group", 1)
        kernel = numpy_helper.to_array(weights[node.input[1]]) if (
            node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights) else None
        if kernel is None or groups < 2 or kernel.shape[:2] != (2 * groups, 2):
            nodes.append(node)
            continue
        channels, name, x = kernel.shape[0], node.output[0], node.input[0]
        own = np.arange(channels)
        graph.initializer.extend([
            numpy_helper.from_array(kernel[own, own % 2][:, None].astype(np.float32), f"{name}_own_w"),
            numpy_helper.from_array(kernel[own, 1 - own % 2][:, None].astype(np.float32), f"{name}_partner_w"),
            numpy_helper.from_array((own ^ 1).astype(np.int64), f"{name}_partners"),
        ])
        depthwise = {**attributes, "group": channels}
        nodes += [
            helper.make_node("Conv", [x, f"{name}_own_w", *node.input[2:3]], [f"{name}_own"], **depthwise),
            helper.make_node("Gather", [x, f"{name}_partners"], [f"{name}_swapped"], axis=1),
            helper.make_node("Conv", [f"{name}_swapped", f"{name}_partner_w"], [f"{name}_partner"], **depthwise),
            helper.make_node("Add", [f"{name}_own", f"{name}_partner"], [name]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
