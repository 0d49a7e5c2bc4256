"""The pool of embedding actors: the camera groups' faces embedded in batches across groups.

Each :class:`EmbeddingActor` loads the groups' recogniser alone (no detector) and answers ``embed(crops)``
through a :class:`~facetrail.cluster.batching.MicroBatcher`: the aligned 112x112 crops of whichever groups
asked within ``max_wait_ms`` go through the network in one run (up to ``max_batch`` faces), and each caller
gets its own rows back. They are the crops the group's own engine would embed (``FaceShot.crop``), so the
vectors are the same, up to the float rounding of a different batch.

A group embeds through an :class:`EmbeddingPool` (the pipeline's ``CropEmbedder``): each request goes to the
actor with the fewest of this group's requests in flight. Ray restarts a dead actor (``max_restarts=-1``);
a request it lost, or one it cannot take (dead, restarting, silent for ``CALL_TIMEOUT_S``), is sent again to
another actor, or to the same once restarted, for up to ``RETRY_FOR_S``: a dead node's actor loses no face.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from facetrail.cluster.batching import BatchStats, MicroBatcher
from facetrail.cluster.nodes import node_label
from facetrail.config.cluster import EmbeddingPool as PoolSettings
from facetrail.vision.embedder import ArcFaceEmbedder
from facetrail.vision.engine import EngineConfig, make_embedder

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 30.0  # one request unanswered this long (its node silent, not yet declared dead): send it again
RETRY_FOR_S = 180.0  # a request is resent for this long; then it fails, and with it the group's pipeline
RETRY_PAUSE_S = 0.5  # between two rounds of every actor failing (they are restarting)
AVOID_FAILED_S = 2.0  # an actor that just failed a request gets no new one for this long, while others live


class EmbeddingUnavailable(RuntimeError):
    """No embedding actor answered a request within ``RETRY_FOR_S``."""


@dataclass(frozen=True)
class ActorStats:
    """One embedding actor's node and what its batcher did since it (re)started."""

    node: str
    batches: BatchStats
    waiting: int = 0  # requests taken and not yet answered


class EmbeddingActor:
    """Embeds aligned face crops for every group, batching requests that arrive together (an async actor)."""

    def __init__(self, engine: EngineConfig, max_batch: int, max_wait_s: float) -> None:
        embedder = make_embedder(engine)
        if not isinstance(embedder, ArcFaceEmbedder):  # the schema refuses this; a direct caller may not
            raise ValueError(f"the embedding pool needs the arcface recogniser, not {engine.recogniser}")
        self.model_id = embedder.model_id
        self.node = node_label()
        self._batcher = MicroBatcher(embedder.embed_crops, max_batch=max_batch, max_wait_s=max_wait_s)
        log.info("embedding actor on %s: %s, batches of up to %d faces", self.node, self.model_id, max_batch)

    async def embed(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Unit embeddings (n, d) of aligned BGR crops (n, 112, 112, 3), row i for crop i."""
        return await self._batcher.run(crops)

    async def ready(self) -> str:
        """The model id, once the actor has loaded it (the driver waits on this)."""
        return self.model_id

    async def stats(self) -> ActorStats:
        """Where the actor runs, its batches since it (re)started, the requests it holds now."""
        return ActorStats(self.node, self._batcher.stats, self._batcher.waiting)


def pool_engine(engine: EngineConfig, settings: PoolSettings) -> EngineConfig:
    """The groups' engine settings as an embedding actor runs them: as many threads as it has CPUs."""
    return EngineConfig(recogniser=engine.recogniser, providers=engine.providers,
                        threads=max(1, round(settings.cpus_per_actor)))


def actor_names(run_id: str, settings: PoolSettings) -> list[str]:
    """The names of a run's embedding actors (in the driver's Ray namespace)."""
    return [f"facetrail-embedding-{run_id}-{k}" for k in range(settings.actors)]


def start_actors(engine: EngineConfig, settings: PoolSettings, gpus: float, names: Sequence[str]) -> list[Any]:
    """Create one embedding actor per name, spread over the nodes with the resources they ask for.

    Named, so that a group finds them by name: a group is given the names, not the handles, and a restarted
    group's constructor arguments are plain strings (Ray warns that arguments held by reference may be lost
    for a restart).
    """
    actor_engine = pool_engine(engine, settings)
    return [ray.remote(EmbeddingActor).options(
        name=name, max_restarts=-1, max_task_retries=0, num_cpus=settings.cpus_per_actor, num_gpus=gpus,
        resources=dict(settings.resources) or None, scheduling_strategy="SPREAD",
    ).remote(actor_engine, settings.max_batch, settings.max_wait_ms / 1000.0) for name in names]


def lookup(name: str, timeout: float = 60.0) -> Any:
    """The handle of the embedding actor called ``name`` (ValueError when it is not there within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ray.get_actor(name)
        except ValueError:  # created by the driver a moment ago: not registered with the head yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class EmbeddingPool:
    """A camera group's way to the embedding actors: a ``CropEmbedder``. Thread-safe.

    Each request goes to the actor with the fewest of this process's requests in flight (ties in turn);
    one that fails because its actor died or does not answer is sent again, as the module says.
    """

    def __init__(self, actors: Sequence[Any], model_id: str) -> None:
        """``actors``: the actors' handles, or their names (looked up in this job's namespace)."""
        if not actors:
            raise ValueError("an embedding pool needs at least one actor")
        self.handles = [lookup(actor) if isinstance(actor, str) else actor for actor in actors]
        self._model_id = model_id
        self._lock = threading.Lock()
        self._in_flight = [0] * len(self.handles)
        self._failed_at = [-1e9] * len(self.handles)
        self._turn = itertools.count()
        self.resent = 0  # requests sent again after their actor failed them

    @property
    def model_id(self) -> str:
        """The recogniser's model id (the driver's configuration names it)."""
        return self._model_id

    def embed_crops(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Unit embeddings (n, d) of aligned BGR crops (n, 112, 112, 3) from the pool; EmbeddingUnavailable
        when no actor answers within ``RETRY_FOR_S``."""
        deadline = time.monotonic() + RETRY_FOR_S
        failures = 0
        while True:
            index = self._take()
            try:
                vectors: npt.NDArray[np.float32] = ray.get(self.handles[index].embed.remote(crops),
                                                           timeout=CALL_TIMEOUT_S)
                return vectors
            except (RayActorError, GetTimeoutError) as error:
                failures += 1
                with self._lock:
                    self._failed_at[index] = time.monotonic()
                    self.resent += 1
                if time.monotonic() > deadline:
                    raise EmbeddingUnavailable(f"no embedding actor answered for {RETRY_FOR_S:g} s: "
                                               f"{type(error).__name__}") from error
                log.warning("embedding actor %d failed a request (%s); sending it again", index,
                            type(error).__name__)
                if failures % len(self.handles) == 0:
                    time.sleep(RETRY_PAUSE_S)  # every actor failed in turn: give Ray time to restart them
            finally:
                with self._lock:
                    self._in_flight[index] -= 1

    def _take(self) -> int:
        """The index of the actor for the next request (its in-flight count taken)."""
        with self._lock:
            now = time.monotonic()
            turn = next(self._turn)
            order = [(turn + k) % len(self.handles) for k in range(len(self.handles))]
            healthy = [i for i in order if now - self._failed_at[i] > AVOID_FAILED_S] or order
            index = min(healthy, key=lambda i: self._in_flight[i])  # min keeps the first of equals: in turn
            self._in_flight[index] += 1
            return index
