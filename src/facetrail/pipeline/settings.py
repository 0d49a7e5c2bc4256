"""From the YAML configuration to the settings of each part of the pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta

from facetrail.config.schema import CameraConfig, FaceRecognitionConfig, FacetrailConfig
from facetrail.events.mqtt import MqttSettings
from facetrail.events.webhooks import WebhookTarget
from facetrail.pipeline.recorder import Channels, EventRules
from facetrail.track.bestshot import BestShotSettings
from facetrail.track.tracker import TrackerSettings
from facetrail.video.camera import CameraSettings, ReconnectSettings
from facetrail.video.motion import MotionSettings
from facetrail.vision.engine import EngineConfig
from facetrail.vision.lowlight import LowLightConfig

UNKNOWN_FRACTION = 0.8  # default unknown_score as a fraction of the recognition threshold
# Unknown faces are joined into one visitor only when clearly alike: a wrong merge of two strangers
# is worse than one person holding two visitor ids.
DEFAULT_CLUSTER_THRESHOLD = 0.4


def engine_config(config: FacetrailConfig) -> EngineConfig:
    """The face engine of the pipeline: no rotation search (video), the configured detector."""
    size = config.detector.input_size
    return EngineConfig(recogniser=config.recogniser, detector_input=(size, size),
                        score_threshold=config.detector.score_threshold, try_rotations=False)


def camera_settings(name: str, camera: CameraConfig, *, start_time: datetime | None = None,
                    watches_door: bool = False) -> CameraSettings:
    """Reader settings of one camera; a door's camera analyses every sampled frame (no motion gate).

    Someone waiting still in front of a door moves too little for the gate, and their liveness and
    consecutive shots need every frame.
    """
    source = camera.detect_input
    motion = camera.motion
    reconnect = camera.reconnect
    return CameraSettings(
        name=name, path=source.path, fps=camera.detect.fps, width=camera.detect.width, height=camera.detect.height,
        input_args=dict(source.input_args), loop=source.loop, realtime=source.realtime, timeout_s=camera.timeout_s,
        motion=MotionSettings(enabled=motion.enabled and not watches_door, threshold=motion.threshold,
                              min_changed=motion.min_changed, downscale_width=motion.downscale_width,
                              max_skip_s=motion.max_skip_s),
        reconnect=ReconnectSettings(initial_s=reconnect.initial_s, max_s=reconnect.max_s, factor=reconnect.factor,
                                    max_attempts=reconnect.max_attempts),
        start_time=start_time)


def thresholds(recognition: FaceRecognitionConfig, calibrated: float) -> tuple[float, float]:
    """(recognition threshold, unknown score) of a camera, defaults filled in."""
    named = recognition.recognition_threshold if recognition.recognition_threshold is not None else calibrated
    unknown = recognition.unknown_score if recognition.unknown_score is not None else UNKNOWN_FRACTION * named
    return named, min(unknown, named)


def low_light(recognition: FaceRecognitionConfig) -> LowLightConfig:
    """Low-light enhancement on or off for a camera."""
    return LowLightConfig(enabled=recognition.low_light)


def tracker_settings(config: FacetrailConfig) -> TrackerSettings:
    """Association and track-lifetime settings."""
    tracking = config.tracking
    return TrackerSettings(max_lost_s=tracking.max_lost_s, rejoin_s=tracking.rejoin_s,
                           rejoin_similarity=tracking.rejoin_similarity)


def best_shot_settings(config: FacetrailConfig, recognition: FaceRecognitionConfig) -> BestShotSettings:
    """Which shots of a track are kept and embedded."""
    tracking = config.tracking
    return BestShotSettings(keep=tracking.best_shots, max_embeddings=tracking.max_embeddings,
                            reembed_margin=tracking.reembed_margin, min_quality=recognition.min_quality,
                            min_area=float(recognition.min_area))


def channels(config: FacetrailConfig) -> Channels:
    """The message channels that are configured."""
    return Channels.from_config(config)


def event_rules(config: FacetrailConfig) -> EventRules:
    """Which events are raised."""
    events = config.events
    return EventRules(watchlist_hit=events.watchlist_hit, unknown_visitor=events.unknown_visitor,
                      seen_again=events.seen_again, seen_again_after=timedelta(seconds=events.seen_again_after_s),
                      snapshot_quality=events.snapshot_quality)


def mqtt_settings(config: FacetrailConfig) -> MqttSettings | None:
    """The MQTT connection, when MQTT is on."""
    mqtt = config.mqtt
    if not mqtt.enabled:
        return None
    return MqttSettings(host=mqtt.host, port=mqtt.port, user=mqtt.user, password=mqtt.password,
                        topic_prefix=mqtt.topic_prefix, client_id=mqtt.client_id, qos=mqtt.qos, tls=mqtt.tls)


def webhook_targets(config: FacetrailConfig) -> list[WebhookTarget]:
    """The configured webhook receivers."""
    return [WebhookTarget(name=hook.name, url=str(hook.url), secret=hook.secret, timeout_s=hook.timeout_s)
            for hook in config.webhooks]
