"""Exact, in-memory rewrites of model graphs that make onnxruntime faster on x86 CPUs.

The weights file on disk is never changed (its sha256 stays the pinned one);
the session is built from the rewritten bytes.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np


def cpu_rewrite_applies(providers: list[str]) -> bool:
    """True on x86 when the CPU provider runs the model (the layout gain is x86-specific)."""
    return providers[:1] == ["CPUExecutionProvider"] and platform.machine().lower() in {"x86_64", "amd64"}


def prelu_as_convs(path: Path) -> bytes:
    """The model with every PRelu(x, a) written as Relu(x) + DWConv_{-a}(Relu(DWConv_{-1}(x))).

    The same function: the two Relu branches never overlap, and multiplying by
    -1 or -a is exact. But onnxruntime's blocked NCHWc layout on x86 supports
    Relu, Conv and Add and not PRelu, so the stock w600k_mbf graph converts
    layouts around each of its 34 PRelu nodes; without them the recogniser
    runs about 30% faster (bench/engine_stages.py) with embeddings within
    1e-6 of the stock graph's.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
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
    serialised: bytes = model.SerializeToString()
    return serialised
