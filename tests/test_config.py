"""The YAML configuration: validation with lines and fields, secrets, paths, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from facetrail.config.errors import ConfigError
from facetrail.config.loader import load_config, parse_config
from facetrail.config.schema import CameraConfig, CameraInput, FacetrailConfig
from facetrail.pipeline.settings import camera_settings
from facetrail.video.camera import DEFAULT_TIMEOUT_S, DetectSettings, ReconnectSettings, VideoInput
from facetrail.video.motion import MotionSettings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config.yml"
MINIMAL = "purpose: tests\ncameras:\n  door:\n    inputs:\n      - path: door.mp4\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yml")
    return caught.value.lines


def test_the_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACETRAIL_MQTT_PASSWORD", "FACETRAIL_WEBHOOK_SECRET", "FACETRAIL_CAMERA_PASSWORD"):
        monkeypatch.setenv(name, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if "WEBHOOK" in name else "s3cret")
    config = load_config(EXAMPLE)
    assert set(config.cameras) == {"front_door", "lobby"}
    assert config.mqtt.password == "s3cret"
    assert "viewer:s3cret@" in config.cameras["front_door"].detect_input.path
    assert config.data_dir == EXAMPLE.parent / "facetrail-data"
    assert config.cameras["lobby"].detect_input.path == str(EXAMPLE.parent / "recordings" / "lobby.mp4")
    assert config.camera_recognition("lobby").min_area == 900
    assert config.camera_recognition("front_door").min_area == 1600


def test_an_unknown_key_names_its_line_and_field() -> None:
    lines = problems(MINIMAL + "    detect:\n      fsp: 5\n")
    assert lines == ["site.yml, line 7, cameras.door.detect.fsp: unknown setting (check the spelling; "
                     "`facetrail config schema` lists every setting)"]


def test_bad_values_name_line_and_field_and_all_are_listed() -> None:
    lines = problems(MINIMAL + "    detect:\n      fps: 0\nmqtt:\n  port: 99999\n")
    assert lines[0].startswith("site.yml, line 7, cameras.door.detect.fps: ") and "greater than 0" in lines[0]
    assert lines[1].startswith("site.yml, line 9, mqtt.port: ")
    assert len(lines) == 2


def test_missing_purpose_and_cameras() -> None:
    lines = problems("data_dir: x\n")
    assert any(line.endswith("purpose: this setting is required") for line in lines)
    assert any(line.endswith("cameras: this setting is required") for line in lines)


def test_yaml_syntax_error_names_the_line() -> None:
    lines = problems("purpose: x\ncameras:\n  door: [unclosed\n")
    assert len(lines) == 1 and lines[0].startswith("site.yml, line 4") and "not valid YAML" in lines[0]
    assert problems("- a list\n") == ["site.yml, line 1: the file must be a mapping of settings (purpose:, "
                                      "cameras:, ...)"]


def alias_bomb(levels: int) -> str:
    """A "billion laughs": each level lists the one before nine times (9**levels strings from a few hundred bytes)."""
    lines = ["purpose: x", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_with_one_line() -> None:
    lines = problems(alias_bomb(4))
    assert lines == ["site.yml, line 3: not valid YAML: YAML aliases (*l0) are not allowed here; write the value "
                     "out in full"]
    shared = MINIMAL + "  gate:\n    inputs: *door\n"
    assert "YAML aliases (*door)" in problems(shared.replace("    inputs:\n", "    inputs: &door\n", 1))[0]


def test_the_cli_refuses_a_one_kilobyte_alias_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(alias_bomb(10))
    assert len(bomb.read_bytes()) < 1100
    result = subprocess.run([sys.executable, "-m", "facetrail.cli.main", "config", "validate", str(bomb)],
                            capture_output=True, text=True, timeout=120)  # before: past 800 MB, for minutes
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {bomb}, line 3: not valid YAML: YAML aliases (*l0) are "
                                                  "not allowed here; write the value out in full"]


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL + "mqtt:\n  password: \"{FACETRAIL_BROKER_PW}\"\n"
    monkeypatch.setenv("FACETRAIL_BROKER_PW", "hunter2")
    assert parse_config(text).mqtt.password == "hunter2"
    monkeypatch.delenv("FACETRAIL_BROKER_PW")
    assert problems(text) == ["site.yml, line 7, mqtt.password: the environment variable FACETRAIL_BROKER_PW is "
                              "not set"]
    monkeypatch.setenv("HOME_PATH_NOT_OURS", "x")
    assert parse_config(MINIMAL + "mqtt:\n  password: \"{HOME_PATH_NOT_OURS}\"\n").mqtt.password == \
        "{HOME_PATH_NOT_OURS}"  # only FACETRAIL_ names are substituted


def test_relative_paths_follow_the_config_file_not_the_working_folder(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "config.yml").write_text(MINIMAL + "  street:\n    inputs:\n      - path: rtsp://cam/1\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(site / "config.yml")
    assert config.data_dir == site / "facetrail-data"
    assert config.cameras["door"].detect_input.path == str(site / "door.mp4")
    assert config.cameras["street"].detect_input.path == "rtsp://cam/1"


@pytest.mark.parametrize("inputs, message", [
    ("      - path: a.mp4\n        roles: [record]\n", "exactly one input needs the detect role (found 0)"),
    ("      - path: a.mp4\n      - path: b.mp4\n", "exactly one input needs the detect role (found 2)"),
])
def test_exactly_one_detect_input(inputs: str, message: str) -> None:
    lines = problems("purpose: x\ncameras:\n  door:\n    inputs:\n" + inputs)
    assert lines == [f"site.yml, line 4, cameras.door.inputs: {message}"]


def test_names_and_secrets_are_checked() -> None:
    assert "use lower-case letters" in problems("purpose: x\ncameras:\n  Front Door:\n    inputs:\n"
                                                "      - path: a.mp4\n")[0]
    assert "whsec_" in problems(MINIMAL + "webhooks:\n  - name: desk\n    url: https://x/y\n    secret: nope!\n")[0]


def _walk(schema: dict[str, Any], where: str, missing: list[str]) -> None:
    for name, prop in schema.get("properties", {}).items():
        if not prop.get("title") or not prop.get("description"):
            missing.append(f"{where}.{name}")


def test_every_field_has_a_title_and_a_description() -> None:
    schema = FacetrailConfig.model_json_schema()
    missing: list[str] = []
    _walk(schema, "FacetrailConfig", missing)
    for name, definition in schema.get("$defs", {}).items():
        _walk(definition, name, missing)
    assert not missing, missing
    assert schema["additionalProperties"] is False


def test_cli_validate_and_schema(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(MINIMAL)
    bad = tmp_path / "bad.yml"
    bad.write_text(MINIMAL + "    detect:\n      fps: many\n")
    command = [sys.executable, "-m", "facetrail.cli.main", "config"]
    ok = subprocess.run([*command, "validate", str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{good}: OK (1 camera(s): door)"
    failed = subprocess.run([*command, "validate", str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"{bad}, line 7, cameras.door.detect.fps: Input should be a valid number" in failed.stderr
    missing = subprocess.run([*command, "validate", str(tmp_path / "nope.yml")], capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    schema = subprocess.run([*command, "schema"], capture_output=True, text=True, check=True)
    assert json.loads(schema.stdout)["title"] == "FacetrailConfig"


def test_inconsistent_values_are_rejected_and_numbers_become_ffmpeg_text() -> None:
    lines = problems(MINIMAL + "face_recognition:\n  recognition_threshold: 0.3\n  unknown_score: 0.5\n")
    assert len(lines) == 1 and "line 6, face_recognition: unknown_score (0.5) must not be above" in lines[0]
    camera = ("purpose: x\nface_recognition:\n  recognition_threshold: 0.3\ncameras:\n  door:\n    inputs:\n"
              "      - path: a.mp4\n    face_recognition:\n      unknown_score: 0.4\n")
    assert "camera door: face_recognition overrides" in problems(camera)[0]
    assert "max_s (1.0) must not be below initial_s (5.0)" in problems(
        MINIMAL + "    reconnect:\n      initial_s: 5\n      max_s: 1\n")[0]
    config = parse_config(MINIMAL.replace("door.mp4", "rtsp://cam/1") + "        input_args:\n"
                          "          timeout: 5000000\n          fflags: nobuffer\n")
    assert config.cameras["door"].detect_input.input_args == {"timeout": "5000000", "fflags": "nobuffer"}


def test_an_unquoted_secret_says_to_quote_it() -> None:
    lines = problems(MINIMAL + "mqtt:\n  password: {FACETRAIL_MQTT_PASSWORD}\n")
    assert lines[0].startswith("site.yml, line 7, mqtt.password: a {FACETRAIL_...} reference must be in quotes")


def test_video_settings_are_defined_once_and_reach_the_camera_reader_unchanged() -> None:
    camera_fields = CameraConfig.model_fields
    assert camera_fields["motion"].annotation is MotionSettings
    assert camera_fields["detect"].annotation is DetectSettings
    assert camera_fields["reconnect"].annotation is ReconnectSettings
    assert issubclass(CameraInput, VideoInput)
    assert camera_fields["timeout_s"].default == DEFAULT_TIMEOUT_S
    # The schema users read is the runtime class's own metadata.
    schema = FacetrailConfig.model_json_schema()["$defs"]
    threshold = MotionSettings.__pydantic_fields__["threshold"]
    assert schema["MotionSettings"]["properties"]["threshold"] == {
        "default": threshold.default, "title": threshold.title, "description": threshold.description,
        "minimum": 1, "maximum": 255, "type": "integer"}
    assert schema["CameraConfig"]["properties"]["timeout_s"]["description"] == "Seconds to open or read a stream."

    config = parse_config(MINIMAL.replace("door.mp4", "rtsp://cam/1") + "        input_args:\n"
                          "          rtsp_transport: tcp\n    detect:\n      fps: 8\n      width: 640\n"
                          "    motion:\n      threshold: 40\n      max_skip_s: 1.5\n"
                          "    reconnect:\n      initial_s: 0.5\n      max_attempts: 4\n    timeout_s: 3\n")
    camera = config.cameras["door"]
    settings = camera_settings("door", camera)
    assert settings.input is camera.detect_input and settings.input.input_args == {"rtsp_transport": "tcp"}
    assert settings.detect is camera.detect and settings.detect == DetectSettings(fps=8, width=640)
    assert settings.motion is camera.motion and settings.motion == MotionSettings(threshold=40, max_skip_s=1.5)
    assert settings.reconnect is camera.reconnect and settings.reconnect.max_attempts == 4
    assert settings.timeout_s == 3 and settings.live
    door = camera_settings("door", camera, watches_door=True)
    assert door.motion == dataclasses.replace(camera.motion, enabled=False) and camera.motion.enabled


def test_delivery_event_retention_and_door_settings_are_defined_once() -> None:
    from datetime import time, timedelta

    from pydantic import TypeAdapter

    from facetrail.config.doors import DoorCommandConfig, DoorConfig, DoorLivenessConfig
    from facetrail.config.schema import EventsConfig, MqttConfig, RetentionConfig, UnknownsConfig, WebhookConfig
    from facetrail.door.commands import MqttDoorChannel, MqttDoorSettings
    from facetrail.door.decision import DoorRule, DoorSettings
    from facetrail.door.liveness import LivenessRequirements, LivenessSettings
    from facetrail.events.mqtt import MqttSettings
    from facetrail.events.rules import EventRules
    from facetrail.events.webhooks import WebhookTarget
    from facetrail.pipeline.settings import event_rules, mqtt_settings, values_of, webhook_targets
    from facetrail.store.retention import RetentionPolicy
    from facetrail.track.unknowns import UnknownsSettings

    # Each section is the runtime class, or inherits it and adds only what the configuration alone knows.
    assert EventsConfig is EventRules and UnknownsConfig is UnknownsSettings
    assert DoorLivenessConfig is LivenessRequirements
    for section, runtime, added in ((MqttConfig, MqttSettings, {"enabled"}), (WebhookConfig, WebhookTarget, {"events"}),
                                    (RetentionConfig, RetentionPolicy, {"purge_interval_s"}),
                                    (DoorConfig, DoorSettings, {"allow", "factor_timeout_s", "command"}),
                                    (DoorCommandConfig, MqttDoorChannel, {"mqtt", "http_url", "http_secret",
                                                                           "deadline_s"})):
        assert issubclass(section, runtime)
        assert {f.name for f in dataclasses.fields(section)} - {f.name for f in dataclasses.fields(runtime)} == added
    assert issubclass(MqttDoorSettings, MqttDoorChannel) and issubclass(LivenessSettings, LivenessRequirements)
    assert issubclass(DoorRule, DoorSettings)
    # The schema users read is the runtime classes' own metadata.
    schema = FacetrailConfig.model_json_schema()["$defs"]
    assert schema["MqttConfig"]["properties"]["port"]["description"] == \
        MqttSettings.__pydantic_fields__["port"].description
    assert schema["RetentionConfig"]["properties"]["events_days"]["default"] == 90

    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    config = parse_config(
        MINIMAL + "unknowns:\n  window_days: 3\nevents:\n  seen_again: true\n  seen_again_after_s: 90\n"
        "mqtt:\n  enabled: true\n  host: broker.lan\n  qos: 2\n  keepalive: 15\n"
        f"webhooks:\n  - name: desk\n    url: https://x/y\n    secret: {secret}\n    timeout_s: 3\n"
        "retention:\n  events_days: 30\n  only_watchlist_hits: true\n"
        "doors:\n  front:\n    camera: door\n    allow: [residents]\n    hours: ['07:00-24:00']\n"
        "    threshold: 0.5\n    consecutive: 4\n    liveness:\n      require_depth: true\n      min_frames: 6\n"
        "    command:\n      topic_prefix: site/doors\n      require_state_ack: true\n")
    # YAML values reach the runtime objects unchanged, in the YAML's units.
    assert mqtt_settings(config) is config.mqtt and config.mqtt.keepalive == 15 and config.mqtt.qos == 2
    assert webhook_targets(config) == config.webhooks and config.webhooks[0].timeout_s == 3
    rules = event_rules(config)
    assert rules is config.events and rules.seen_again_after == timedelta(seconds=90)
    assert config.unknowns.window_days == 3
    retention = config.retention
    assert retention.events == timedelta(days=30) and retention.unknown_sightings == timedelta(days=7)
    recorded = json.loads(json.dumps(dataclasses.asdict(retention)))  # as the runner audits it, read back
    assert TypeAdapter(RetentionConfig).validate_python(recorded) == retention
    door = config.doors["front"]
    rule = DoorRule.for_door("front", door, allowed=frozenset({7}), calibrated=0.3)
    assert (rule.threshold, rule.consecutive, rule.camera, rule.allowed) == (0.5, 4, "door", frozenset({7}))
    assert rule.opening_hours() == ((time(7), time(23, 59, 59, 999999)),)
    assert isinstance(rule.liveness, LivenessSettings)
    assert (rule.liveness.require_depth, rule.liveness.min_frames) == (True, 6)
    assert DoorRule.for_door("front", dataclasses.replace(door, threshold=None), allowed=frozenset(),
                             calibrated=0.3).threshold == 0.3
    channel = MqttDoorSettings(**values_of(door.command, MqttDoorChannel))
    assert (channel.topic_prefix, channel.require_state_ack) == ("site/doors", True)
    # Bounds and messages of the runtime classes are the configuration's.
    assert "a topic prefix has no +, # or leading/trailing /" in problems(MINIMAL + "mqtt:\n  topic_prefix: a/#\n")[0]
    assert "greater than or equal to 3" in problems(MINIMAL.replace("door.mp4", "d.mp4") + "doors:\n  d:\n"
                                                    "    camera: door\n    allow: [x]\n    liveness:\n"
                                                    "      min_frames: 2\n")[0]
