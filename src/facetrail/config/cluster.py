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
