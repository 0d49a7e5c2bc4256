"""The ``cluster:`` section: where the Ray cluster is, how cameras are grouped and placed, how fast they move."""

from __future__ import annotations

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

_SETTINGS = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_SETTINGS)
class RayConnection:
    """How the run reaches the Ray cluster."""

    address: str = Field(min_length=1, title="Address",
                         description="HOST:PORT of the cluster's head node (what `ray start --head --port` "
                                     "listens on), or auto: the cluster this machine belongs to.")


@dataclass(frozen=True, config=_SETTINGS)
class EmbeddingPool:
    """Actors that embed the faces of every camera group, in batches across groups."""

    actors: int = Field(
        default=0, ge=0, le=256, title="Actors",
        description="Embedding actors in the pool. 0: each camera group embeds its own faces (one batch per "
                    "step). More: groups send their aligned faces to the pool, which batches the faces of "
                    "several groups into one network run (pays on GPU nodes and with many groups; on a few CPU "
                    "cores it adds a process and a hop per face). Needs the arcface recogniser.")
    cpus_per_actor: float = Field(default=1.0, gt=0, le=256, title="CPUs per actor",
                                  description="CPUs each embedding actor asks the cluster for (Ray's num_cpus); "
                                              "its network runs on as many threads.")
    gpus_per_actor: float | None = Field(
        default=None, ge=0, le=16, title="GPUs per actor",
        description="GPUs each embedding actor asks for. Empty: as the groups (gpus_per_group if set, else "
                    "none on a cluster without GPUs, else an equal share of the cluster's GPUs, at most one).")
    resources: dict[str, float] = Field(
        default_factory=dict, title="Resources",
        description="Custom Ray resources each embedding actor asks for, e.g. {embedding: 1} to keep the pool "
                    "on the nodes started with that resource. Empty: any node with the CPUs and GPUs.")
    max_batch: int = Field(default=32, ge=1, le=1024, title="Largest batch",
                           description="Faces an actor embeds in one network run, at most (requests are never "
                                       "split: one larger than this runs alone).")
    max_wait_ms: float = Field(
        default=5.0, ge=0, le=1000, title="Batch wait",
        description="Milliseconds an actor waits after a request for others to join its batch (until "
                    "max_batch faces): a longer wait fills batches, and every face waits that much longer.")


@dataclass(frozen=True, config=_SETTINGS)
class ClusterSettings:
    """Running the cameras on a Ray cluster (needs a PostgreSQL database every node reaches)."""

    ray: RayConnection = Field(title="Ray", description="The Ray cluster.")
    cameras_per_group: int = Field(
        default=1, ge=1, le=64, title="Cameras per group",
        description="Cameras one actor runs (one pipeline, one shared detector batch). A group moves as a whole "
                    "when its node dies.")
    cpus_per_group: float = Field(default=1.0, gt=0, le=256, title="CPUs per group",
                                  description="CPUs each group asks the cluster for (Ray's num_cpus).")
    gpus_per_group: float | None = Field(
        default=None, ge=0, le=16, title="GPUs per group",
        description="GPUs each group asks for. Empty: none on a cluster without GPUs, else an equal share of "
                    "the cluster's GPUs (at most one).")
    resources: dict[str, float] = Field(
        default_factory=dict, title="Resources",
        description="Custom Ray resources each group asks for, e.g. {cameras: 1}: only nodes started with "
                    "`ray start --resources '{\"cameras\": 4}'` run cameras (and at most 4 groups each).")
    restart_deadline_s: float = Field(
        default=30.0, gt=0, le=3600, title="Restart deadline",
        description="Seconds within which the cameras of a dead node run again elsewhere. The head notices a "
                    "dead node after RAY_health_check_period_ms x RAY_health_check_failure_threshold (set them "
                    "on the head: see README); the run warns when a group stays away longer than this.")
    start_timeout_s: float = Field(
        default=180.0, gt=0, le=3600, title="Start timeout",
        description="Seconds a group may take to start (placed on a node, its engine loaded) before the run "
                    "gives up: no node has the CPUs, GPUs or resources it asks for.")
    poll_s: float = Field(default=1.0, gt=0, le=60, title="Status poll",
                          description="Seconds between two status polls of every group.")
    embedding: EmbeddingPool = Field(default_factory=EmbeddingPool, title="Embedding",
                                     description="A pool of embedding actors shared by the camera groups. "
                                                 "Empty (actors: 0): each group embeds its own faces.")
