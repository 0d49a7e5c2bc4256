"""Settings exist once: the configuration's sections are the runtime's own settings classes (or inherit them).

Each test reads a real YAML text, and checks that the schema a user sees and the object the runtime gets come
from one definition, and that a value in the file reaches the runtime unchanged.
"""

from __future__ import annotations

from facetrail.config.loader import parse_config
from facetrail.config.schema import FaceRecognitionConfig, FaceRecognitionOverrides, FacetrailConfig
from facetrail.pipeline import settings as cfg
from facetrail.track.bestshot import ShotGate, ShotSelection
from facetrail.track.decision import RecognitionThresholds
from facetrail.track.tracker import TrackLifetimes
from facetrail.vision.detector import DetectorSettings

YAML = """\
purpose: settings test
detector:
  input_size: 320
face_recognition:
  min_area: 900
  recognition_threshold: 0.3
tracking:
  best_shots: 5
  max_lost_s: 2.0
cameras:
  lobby:
    inputs:
      - path: lobby.mp4
    face_recognition:
      min_quality: 0.4
      unknown_score: 0.1
"""


def described(section: str, setting: str) -> str:
    schema = FacetrailConfig.model_json_schema()
    return str(schema["$defs"][section]["properties"][setting]["description"])


def test_tracking_recognition_and_detector_sections_are_the_runtime_classes() -> None:
    config = parse_config(YAML, "site.yml")
    assert isinstance(config.tracking, TrackLifetimes) and isinstance(config.tracking, ShotSelection)
    assert isinstance(config.face_recognition, ShotGate) and isinstance(config.face_recognition, RecognitionThresholds)
    assert type(config.detector) is DetectorSettings
    # What `facetrail config schema` shows is the runtime field's own description.
    assert described("TrackingConfig", "best_shots") == ShotSelection.__pydantic_fields__["best_shots"].description
    assert described("FaceRecognitionConfig", "recognition_threshold") == \
        RecognitionThresholds.__pydantic_fields__["recognition_threshold"].description


def test_values_in_the_file_reach_the_runtime_unchanged() -> None:
    config = parse_config(YAML, "site.yml")
    lobby = config.camera_recognition("lobby")
    shots = cfg.best_shot_settings(config, lobby)
    assert (shots.best_shots, shots.min_area, shots.min_quality) == (5, 900, 0.4)
    assert cfg.tracker_settings(config).max_lost_s == 2.0
    assert lobby.resolve(calibrated=0.23) == (0.3, 0.1)
    assert cfg.engine_config(config).detector_input == (320, 320)


def test_per_camera_overrides_are_generated_from_the_section() -> None:
    assert set(FaceRecognitionOverrides.model_fields) == set(FaceRecognitionConfig.__pydantic_fields__)
    schema = FacetrailConfig.model_json_schema()["$defs"]["FaceRecognitionOverrides"]["properties"]
    assert schema["min_area"]["anyOf"][0]["minimum"] == 0  # the section's bound, not a copy
    assert schema["unknown_score"]["title"] == "Unknown score"
