"""Shared fixtures: the real data folder, the sample photos and one engine per session."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facetrail.vision.engine import EngineConfig, FaceEngine
from facetrail.vision.image import BGRImage, load_image
from facetrail.vision.lowlight import LowLightConfig
from facetrail.vision.samples import sample_image
from services import MOSQUITTO, Mosquitto, free_port

pytest_plugins = ["strict_skips"]


def shared_data_dir() -> Path:
    """../shared/data beside the checkout, or FACETRAIL_SHARED_DATA."""
    override = os.environ.get("FACETRAIL_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real face data not found at {path} (set FACETRAIL_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def video_engine() -> FaceEngine:
    """A face engine with the defaults the video tests run the pipeline on (shared: it holds no state)."""
    return FaceEngine(EngineConfig())


@pytest.fixture(scope="session")
def street_mp4(data_dir: Path) -> Path:
    """The shared real video: 4.2 s of 1080p25, a dozen people walking towards the camera."""
    path = data_dir / "video" / "street.mp4"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="session")
def players() -> BGRImage:
    return load_image(sample_image("players.jpg"))


@pytest.fixture(scope="session")
def yaoming() -> BGRImage:
    return load_image(sample_image("yaoming.jpg"))


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    """The default engine, as `facetrail faces` builds it (rotations on)."""
    return FaceEngine(EngineConfig(try_rotations=True))


@pytest.fixture(scope="session")
def plain_engine() -> FaceEngine:
    """No enhancement and no rotation search: exactly what InsightFace sees."""
    return FaceEngine(EngineConfig(low_light=LowLightConfig(enabled=False)))


@pytest.fixture
def postgres() -> Iterator[str]:
    """URL of a throwaway PostgreSQL database (skips, with the reason, where no server answers)."""
    from dbs import postgres_problem, throwaway_postgres

    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A real, empty database: a SQLite file, then a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'facetrail.db'}"
    return str(request.getfixturevalue("postgres"))


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Makes private Mosquitto brokers (not started); every one is stopped at teardown."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    made: list[Mosquitto] = []

    def make(*, persist: bool = False) -> Mosquitto:
        broker = Mosquitto(tmp_path, free_port(), persist=persist)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        if broker.process is not None and broker.process.poll() is None:
            broker.process.send_signal(signal.SIGCONT)  # a test may have paused it
        broker.stop()


@pytest.fixture
def broker(brokers: Callable[..., Mosquitto]) -> Mosquitto:
    """A running private broker."""
    running = brokers()
    running.start()
    return running
