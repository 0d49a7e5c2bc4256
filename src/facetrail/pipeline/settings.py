"""From the YAML configuration to the settings of each part of the pipeline."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import cv2

from facetrail.config.schema import CameraConfig, FaceRecognitionConfig, FacetrailConfig
from facetrail.events.mqtt import MqttSettings
from facetrail.events.webhooks import WebhookTarget
from facetrail.pipeline.recorder import Channels, EventRules
from facetrail.track.bestshot import BestShotSettings, ShotGate, ShotSelection
from facetrail.track.tracker import TrackerSettings, TrackLifetimes
from facetrail.video.camera import CameraSettings
from facetrail.video.record_stream import RecordStream
from facetrail.vision.engine import EngineConfig
from facetrail.vision.lowlight import LowLightConfig

PIPELINE_ONNX_THREADS = 1
# OpenCV's own worker threads, for the whole process while a pipeline runs. The pipeline already keeps the cores
# busy with threads of its own (a reader per camera, detection, tracking), and OpenCV's pool splitting each small
# call (resizing, colour conversion, the optical flow, alignment) across the cores only adds CPU: street.mp4 at 5 fps
# took 12-16% less CPU per frame with one thread on a quiet 2-core machine (bench/frame_cost.py run with either),
# 3-8% on a loaded one (bench/cpu_per_frame.py), with the same faces and tracks (every function used gives the same
# pixels on any thread count).
PIPELINE_OPENCV_THREADS = 1


def use_pipeline_threads() -> None:
    """Set the process's OpenCV thread pool to ``PIPELINE_OPENCV_THREADS`` (process-wide, as OpenCV's is)."""
    cv2.setNumThreads(PIPELINE_OPENCV_THREADS)


def engine_config(config: FacetrailConfig) -> EngineConfig:
    """The face engine of the pipeline: no rotation search (video), the configured detector and video canvas."""
    size = config.detector.input_size
    # One onnxruntime thread per session: the pipeline runs detection and tracking on two threads of its own
    # (runner.DetectionAhead). On the 2-core machine SCRFD took 14 ms a 640x360 frame either way, but 22-23 ms
    # of CPU with a thread per core against 14 with one.
    return EngineConfig(recogniser=config.recogniser, detector_input=(size, size),
                        score_threshold=config.detector.score_threshold, try_rotations=False,
                        video_canvas=config.detector.video_canvas, threads=PIPELINE_ONNX_THREADS)


def camera_settings(name: str, camera: CameraConfig, *, start_time: datetime | None = None,
                    watches_door: bool = False, resume_after: float | None = None) -> CameraSettings:
    """Reader settings of one camera; a door's camera analyses every sampled frame (no motion gate).

    Someone waiting still in front of a door moves too little for the gate, and their liveness and
    consecutive shots need every frame.
    """
    motion = dataclasses.replace(camera.motion, enabled=False) if watches_door else camera.motion
    return CameraSettings(name=name, input=camera.detect_input, detect=camera.detect, timeout_s=camera.timeout_s,
                          motion=motion, reconnect=camera.reconnect, start_time=start_time,
                          resume_after=None if camera.detect_input.is_stream or camera.detect_input.loop
                          else resume_after)


def record_stream(name: str, camera: CameraConfig) -> RecordStream | None:
    """The reader of the camera's record input (its high-resolution stream), when it lists a separate one."""
    source = camera.record_input
    if source is None:
        return None
    return RecordStream(name, source, camera.record_stream, fps=camera.detect.fps, timeout_s=camera.timeout_s,
                        reconnect=camera.reconnect)


def low_light(recognition: FaceRecognitionConfig) -> LowLightConfig:
    """Low-light enhancement on or off for a camera."""
    return LowLightConfig(enabled=recognition.low_light)


def values_of(section: object, part: type) -> dict[str, Any]:
    """The values of ``part``'s settings in a configuration ``section`` that includes them (by inheritance)."""
    return {field.name: getattr(section, field.name) for field in dataclasses.fields(part)}


def tracker_settings(config: FacetrailConfig) -> TrackerSettings:
    """Association settings with the configured track lifetimes."""
    return TrackerSettings(**values_of(config.tracking, TrackLifetimes))


def best_shot_settings(config: FacetrailConfig, recognition: FaceRecognitionConfig) -> BestShotSettings:
    """Which shots of a track are kept and embedded: the tracking section's selection, the camera's gate."""
    return BestShotSettings(**values_of(config.tracking, ShotSelection), **values_of(recognition, ShotGate))


def channels(config: FacetrailConfig) -> Channels:
    """The message channels that are configured."""
    return Channels.from_config(config)


def event_rules(config: FacetrailConfig) -> EventRules:
    """Which events are raised: the ``events:`` section is the recorder's rules."""
    return config.events


def mqtt_settings(config: FacetrailConfig) -> MqttSettings | None:
    """The MQTT connection, when MQTT is on: the ``mqtt:`` section is the publisher's settings."""
    return config.mqtt if config.mqtt.enabled else None


def webhook_targets(config: FacetrailConfig) -> list[WebhookTarget]:
    """The configured webhook receivers: each ``webhooks:`` entry is a sender's target."""
    return list(config.webhooks)
