"""Naming the node this process runs on."""

from __future__ import annotations

import ray


def node_label() -> str:
    """This node as operators see it: its IP address and the start of its Ray node id."""
    context = ray.get_runtime_context()
    address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return f"{address}/{context.get_node_id()[:8]}"
