"""Synthetic camera clips built from real face photos, for the demo, the tests and the benchmark."""

from facetrail.synth.scenes import (
    Appearance,
    DemoClip,
    composite_scene,
    demo_clip,
    demo_frames,
    face_crop,
    pan_zoom,
    synthetic_background,
)
from facetrail.synth.writer import write_clip

__all__ = [
    "Appearance",
    "DemoClip",
    "composite_scene",
    "demo_clip",
    "demo_frames",
    "face_crop",
    "pan_zoom",
    "synthetic_background",
    "write_clip",
]
