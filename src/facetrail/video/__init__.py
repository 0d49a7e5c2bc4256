"""Frames in: video files, RTSP/HTTP streams and image folders, one reader thread per camera.

``sources`` opens and samples an input, ``motion`` gates frames where nothing
moved, ``camera`` runs a reader thread per camera with reconnects and status.
"""

from facetrail.video.camera import (
    Camera,
    CameraSettings,
    CameraState,
    CameraStatus,
    DetectSettings,
    ReconnectSettings,
    VideoInput,
)
from facetrail.video.errors import (
    SourceError,
    SourceOpenError,
    SourceReadError,
    StreamEndedError,
    VideoError,
    mask_credentials,
)
from facetrail.video.frames import Frame, RateSampler, output_size
from facetrail.video.motion import MotionDecision, MotionGate, MotionSettings
from facetrail.video.picture import FramePicture
from facetrail.video.sources import FrameSource, SourceKind, is_stream, open_source, source_kind, stream_options

__all__ = [
    "Camera",
    "CameraSettings",
    "CameraState",
    "CameraStatus",
    "DetectSettings",
    "Frame",
    "FramePicture",
    "FrameSource",
    "MotionDecision",
    "MotionGate",
    "MotionSettings",
    "RateSampler",
    "ReconnectSettings",
    "SourceError",
    "SourceKind",
    "SourceOpenError",
    "SourceReadError",
    "StreamEndedError",
    "VideoError",
    "VideoInput",
    "is_stream",
    "mask_credentials",
    "open_source",
    "output_size",
    "source_kind",
    "stream_options",
]
