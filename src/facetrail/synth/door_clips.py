"""Door camera clips made from real photos, shared by the door tests and ``bench/door.py``.

- ``resident_clip``: one woman's real photos in sequence (eyes open, winking,
  shut, open, head turned): a blink and a head that moves in depth, optionally
  with a stranger standing beside her (tailgating).
- ``printed_photo_clip``: a real photo held up in front of the camera and
  tilted as a flat plane (a presentation attack), ``screen_photo_clip`` the
  same for a photo whose face is too small as it is (cut out first).
- ``unknown_person_clip``: another real person in front of the door, stepping
  a little closer.

Photos are given as paths (``resident_clip`` takes the shared data folder and
finds ``RESIDENT_PHOTOS`` in it); a missing photo raises ``FileNotFoundError``
naming it. The same arguments always give the same frames.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facetrail.synth.scenes import Appearance, composite_scene, face_crop
from facetrail.synth.spoof import moved_photo
from facetrail.synth.writer import write_clip
from facetrail.vision.engine import FaceEngine
from facetrail.vision.image import BGRImage, load_image

FPS = 10.0
SIZE = (1280, 720)
EYES = "conditions/eyes"
OPEN_EYES = f"{EYES}/open_eyes.png"
WINKING = f"{EYES}/close_open_eyes.jpeg"
CLOSED_EYES = f"{EYES}/close_eyes.jpeg"
TURNED = "conditions/pose/left_face.jpeg"
# The resident's photos, relative to the shared data folder (../shared/data).
RESIDENT_PHOTOS = (OPEN_EYES, WINKING, CLOSED_EYES, TURNED)
RESIDENT_DURATION_S = 4.0
PRINTED_FRAMES = 30
BACKGROUND_GREY = 90


def require_photo(path: Path) -> Path:
    """``path`` if it is a file; otherwise FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"door clip photo {path} is absent (the clips are made from the shared data "
                                "folder's real photos; set FACETRAIL_SHARED_DATA to where it is)")
    return path


def head_and_shoulders(engine: FaceEngine, path: Path) -> BGRImage:
    """The main person of a photo, cut out with some margin, ready to walk into a scene."""
    return _cut_out(engine, require_photo(path), margin=0.8)


def _cut_out(engine: FaceEngine, path: Path, *, margin: float) -> BGRImage:
    image = load_image(path)
    faces = engine.analyze(image)
    index = faces.primary()
    if index is None:
        raise ValueError(f"no face in {path}")
    return face_crop(image, faces.detections.xyxy[index], margin=margin)


def resident_clip(engine: FaceEngine, photos_dir: Path, path: Path, *, stranger: BGRImage | None = None,
                  blink_at: float = 0.8) -> Path:
    """The resident blinking and turning her head in front of the door (optionally a stranger beside her).

    ``photos_dir``: the shared data folder holding ``RESIDENT_PHOTOS``. ``stranger``: a cut-out
    (``head_and_shoulders``) standing to her right the whole time. ``blink_at``: when her eyes start to
    close (seconds); they are open again 0.5 s later. 4 s at 10 fps, 1280x720.
    """
    photos_dir = Path(photos_dir)
    for relative in RESIDENT_PHOTOS:
        require_photo(photos_dir / relative)
    cut = {name: head_and_shoulders(engine, photos_dir / name) for name in (OPEN_EYES, WINKING, CLOSED_EYES)}
    turned = head_and_shoulders(engine, photos_dir / TURNED)
    if not 0.0 < blink_at <= 1.5:
        raise ValueError(f"blink_at must be in (0, 1.5] seconds, not {blink_at}")
    # Eyes open; one eye shut (0.2 s), both shut (0.3 s), open again; later a turn of the head.
    steps = [(cut[OPEN_EYES], 0.0, blink_at), (cut[WINKING], blink_at, blink_at + 0.2),
             (cut[CLOSED_EYES], blink_at + 0.2, blink_at + 0.5), (cut[OPEN_EYES], blink_at + 0.5, 2.0),
             (turned, 2.0, 2.5), (cut[OPEN_EYES], 2.5, 3.5)]
    x = 0.33 if stranger is not None else 0.5
    scenes = [Appearance(image, start, end - 0.001, (x, 0.5), (x, 0.5), 0.85, 0.85) for image, start, end in steps]
    if stranger is not None:
        scenes.append(Appearance(stranger, 0.0, 3.5, (0.72, 0.5), (0.72, 0.5), 0.8, 0.8))
    write_clip(path, composite_scene(scenes, duration_s=RESIDENT_DURATION_S, fps=FPS, size=SIZE, noise=2.0),
               fps=FPS)
    return path


def unknown_person_clip(engine: FaceEngine, photo_path: Path, path: Path) -> Path:
    """Another real person in front of the door for 3.5 s, stepping a little closer (4 s at 10 fps)."""
    person = head_and_shoulders(engine, photo_path)
    scene = [Appearance(person, 0.0, 3.5, (0.5, 0.5), (0.51, 0.52), 0.8, 0.85)]
    write_clip(path, composite_scene(scene, duration_s=RESIDENT_DURATION_S, fps=FPS, size=SIZE, noise=2.0),
               fps=FPS)
    return path


def printed_photo_clip(photo_path: Path, path: Path) -> Path:
    """A real photo held up and tilted in front of the camera: 30 frames of a plane moving (3 s at 10 fps)."""
    return _moved_as_plane(load_image(require_photo(photo_path)), path)


def screen_photo_clip(engine: FaceEngine, photo_path: Path, path: Path, *, margin: float = 1.0) -> Path:
    """Like ``printed_photo_clip``, for a photo of a face on a screen or paper that is small in its picture.

    The face's surroundings (``margin`` face sizes on each side, more below) are cut out first, as if the
    screen were held close to the camera, so that the face is large enough for the door to judge.
    """
    return _moved_as_plane(_cut_out(engine, require_photo(photo_path), margin=margin), path)


def _moved_as_plane(image: BGRImage, path: Path) -> Path:
    canvas = resize_to_canvas(image, SIZE)
    write_clip(path, iter(moved_photo(canvas, frames=PRINTED_FRAMES)), fps=FPS)
    return path


def resize_to_canvas(image: BGRImage, size: tuple[int, int]) -> BGRImage:
    """``image`` scaled to 90% of the largest size that fits ``size`` (width, height), centred on grey."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0]) * 0.9
    small = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
    canvas = np.full((height, width, 3), BACKGROUND_GREY, np.uint8)
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas
