"""Helpers of the pipeline tests: clips made from real faces, configurations, enrolment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from facetrail.config.loader import parse_config
from facetrail.config.schema import FacetrailConfig
from facetrail.gallery.enrol import EnrolOptions, Outcome, enrol_person
from facetrail.gallery.gallery import Gallery, GallerySettings
from facetrail.gallery.watchlists import add_member, create_watchlist
from facetrail.pipeline.runner import Pipeline, PipelineStats
from facetrail.synth.door_clips import head_and_shoulders
from facetrail.synth.scenes import Appearance, composite_scene
from facetrail.synth.writer import write_clip
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage
from facetrail.vision.samples import sample_image

__all__ = ["config_for", "enrol", "head_and_shoulders", "make_clip", "run", "two_cameras_of_yao", "walk_in"]

FPS = 10.0


def walk_in(image: BGRImage, start_s: float, end_s: float, x: float, *, scale: float = 0.55) -> Appearance:
    """A person stepping slowly towards the camera at horizontal position ``x``."""
    return Appearance(image, start_s, end_s, (x, 0.52), (x + 0.02, 0.55), scale * 0.9, scale)


def make_clip(path: Path, appearances: Sequence[Appearance], duration_s: float, *,
              darken: Callable[[float], float] | None = None, seed: int = 0) -> Path:
    """Write a static camera's clip of people coming and going."""
    write_clip(path, composite_scene(appearances, duration_s=duration_s, fps=FPS, noise=2.0, darken=darken,
                                     seed=seed), fps=FPS)
    return path


def two_cameras_of_yao(folder: Path, engine: FaceEngine) -> dict[str, Path]:
    """Clips of two cameras, gate and hall; Yao Ming walks past each twice (two watchlist hits per camera)."""
    yao = head_and_shoulders(engine, sample_image("yaoming.jpg"))
    return {name: make_clip(folder / f"{name}.mp4", [walk_in(yao, 0.5, 4.5, x), walk_in(yao, 9.0, 13.0, x)],
                            15.0, seed=seed)
            for seed, (name, x) in enumerate((("gate", 0.3), ("hall", 0.6)))}


def config_for(data_dir: Path, cameras: dict[str, Path | str], extra: str = "") -> FacetrailConfig:
    """A configuration watching ``cameras`` (name -> path) and storing in ``data_dir``."""
    lines = ["purpose: pipeline tests", f"data_dir: {data_dir}", "cameras:"]
    for name, path in cameras.items():
        lines += [f"  {name}:", "    inputs:", f"      - path: {path}", "    detect:", "      fps: 5",
                  "    reconnect:", "      initial_s: 0.05", "      max_attempts: 3"]
    return parse_config("\n".join(lines) + "\n" + extra, "test-config.yml")


def enrol(data_dir: Path, engine: FaceEngine, name: str, photo: Path, *, watchlist: str | None = None,
          reviewers: int = 1, db_url: str | None = None) -> None:
    """Enrol one person from one photo, optionally on a (new) watchlist."""
    gallery = Gallery(GallerySettings(data_dir, db_url), engine=engine)
    try:
        report = enrol_person(gallery, name, [photo], EnrolOptions(actor="tester", take_largest=True))
        assert report.count(Outcome.ENROLLED) == 1, report.files
        if watchlist:
            from sqlalchemy import select

            from facetrail.store.models import Watchlist

            with gallery.db.session() as session:
                exists = session.scalar(select(Watchlist.id).where(Watchlist.name == watchlist)) is not None
            if not exists:
                create_watchlist(gallery, watchlist, purpose="tests", actor="tester", reviewers_required=reviewers)
            add_member(gallery, watchlist, name, actor="tester")
    finally:
        gallery.close()


def run(config: FacetrailConfig, engine: FaceEngine) -> tuple[PipelineStats, Pipeline]:
    """Run the pipeline until every camera ended."""
    pipeline = Pipeline(config, engine=engine, actor="tester")
    stats = pipeline.run(until_done=True)
    return stats, pipeline


def face_width(engine: FaceEngine, cut: BGRImage) -> float:
    """Width in pixels of the main face of a cut-out."""
    found = engine.analyze(cut)
    index = found.primary()
    assert index is not None
    x1, _, x2, _ = found.detections.xyxy[index]
    return float(x2 - x1)
