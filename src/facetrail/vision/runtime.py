"""onnxruntime sessions: provider choice with a logged fallback, tuned options.

One session per model per process; sessions are safe to call from several
threads (onnxruntime's ``run`` is thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from facetrail.vision.errors import ModelError

log = logging.getLogger(__name__)

# Preferred order when the caller says "auto": the fastest provider present wins.
AUTO_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)


def resolve_providers(requested: Sequence[str] | str = "auto") -> list[str]:
    """Providers to use, in order, always ending with the CPU.

    ``"auto"`` takes the GPU providers this onnxruntime build offers. A named
    provider that is not available is dropped with a warning, never an error:
    the CPU is always there.
    """
    available = set(ort.get_available_providers())
    if requested == "auto":
        # TensorRT compiles engines on first use (minutes); only take it when named.
        wanted = [p for p in AUTO_PROVIDERS if p != "TensorrtExecutionProvider"]
    else:
        wanted = [requested] if isinstance(requested, str) else list(requested)
    chosen: list[str] = []
    for name in wanted:
        if name in available:
            chosen.append(name)
        elif requested != "auto":
            log.warning("onnxruntime provider %s is not available here (have: %s); falling back",
                        name, ", ".join(sorted(available)))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def create_session(model_path: Path, providers: Sequence[str] | str = "auto",
                   threads: int = 0, model_bytes: bytes | None = None) -> ort.InferenceSession:
    """Build an inference session for one model file (or rewritten bytes of it).

    ``threads`` is onnxruntime's intra-op thread count (0: one per physical core).
    Raises ModelError when the file cannot be loaded.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # Idle worker threads must not spin: the detector and recogniser sessions take
    # turns on the same cores, and a spinning pool steals them from the other.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chosen = resolve_providers(providers)
    try:
        source: str | bytes = model_bytes if model_bytes is not None else str(model_path)
        session = ort.InferenceSession(source, sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load model {model_path.name}: {exc}") from exc
    active = session.get_providers()
    if active[0] != chosen[0]:
        log.warning("%s: provider %s failed to start; running on %s",
                    model_path.name, chosen[0], active[0])
    else:
        log.debug("%s runs on %s", model_path.name, active[0])
    return session
