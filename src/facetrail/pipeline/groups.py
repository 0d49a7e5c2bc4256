"""Cutting a configuration into camera groups, and the configuration each group runs (a cluster's actors, a
run's worker processes)."""

from __future__ import annotations

from facetrail.config.schema import FacetrailConfig


def camera_groups(config: FacetrailConfig, per_group: int) -> list[list[str]]:
    """The enabled cameras, in the file's order, in groups of at most ``per_group``."""
    names = [name for name, camera in config.cameras.items() if camera.enabled]
    return [names[i:i + per_group] for i in range(0, len(names), max(1, per_group))]


def group_config(config: FacetrailConfig, cameras: list[str]) -> FacetrailConfig:
    """``config`` with only ``cameras`` enabled, and only the doors they watch."""
    mine = set(cameras)
    return config.model_copy(update={
        "cameras": {name: camera.model_copy(update={"enabled": camera.enabled and name in mine})
                    for name, camera in config.cameras.items()},
        "doors": {name: door for name, door in config.doors.items() if door.camera in mine},
    })
