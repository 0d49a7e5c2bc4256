"""Realistic data for the gallery search benchmark: real faces, their augmentations, matched synthetic filler.

- **Real faces**: the main face of every image under ``faces/`` and
  ``lfw-view1/images`` (FaceEngine, cached under /tmp), and of ``augment``
  seeded augmentations of each image (flip, small crop and scale, brightness
  and contrast, blur, JPEG re-encode; each variant a random non-empty mix),
  also through the real FaceEngine.
- **Roles**: queries are *other* photos of enrolled people: ``queries`` of
  the photos after the first of people with two or more (originals only).
  The people they show are enrolled with their remaining original photos
  (a real enrolment holds distinct photos, not augmented copies); every
  other person (the distractors) is in the gallery with their photos and
  the augmentations of them.
- **Synthetic filler**, drawn to match the real embeddings' statistics as
  the distractors are built: one photo per synthetic identity (identity
  centre from the between-identity covariance plus the within-identity,
  photo-to-photo spread: together the covariance of the real photos, around
  their mean), then ``1 + augment`` templates of that photo from the
  augmentation covariance (augmented minus original embeddings); normalised.
  The check (``impostor_check``) compares the queries' cosines to real
  strangers and to as many synthetic templates: they match in mean, spread
  and up to the 99th percentile; beyond it real strangers reach higher (a
  query's nearest of ~15k real strangers is ~0.03 closer than its nearest
  of ~15k synthetic ones: look-alikes and shared photo conditions, which a
  Gaussian does not have; a smoothed bootstrap of real identity centres and
  a multivariate t were tried and closed under a tenth of that gap).
  Chunk ``c`` is drawn from ``default_rng([seed, 1000 + c])``, so any chunk can be
  made again alone and 10M never has to be held as float32.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from facetrail.vision.engine import FaceEngine
from facetrail.vision.errors import ImageError
from facetrail.vision.image import BGRImage, load_image

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

CACHE_DIR = Path(tempfile.gettempdir()) / "facetrail-bench-search"
AUGMENT_VERSION = 1  # bump when the augmentations change (invalidates the cache)
AUGMENTATIONS = ("flip", "crop_scale", "brightness_contrast", "blur", "jpeg")
ENGINE_BATCH = 16


@dataclass
class RealFaces:
    """Main-face embeddings of the real images and their augmentations, one row per image with a face."""

    vectors: F32
    people: list[str]  # person of each row
    photos: list[int]  # index of the original photo of each row (into ``photo_paths``)
    variants: list[int]  # 0: the original photo, 1..augment: its augmentations
    photo_paths: list[str]
    model_id: str
    no_face: int


def image_list(faces: Path, lfw: Path) -> list[tuple[str, Path]]:
    """(person, path) of every image of the own faces folder and of LFW View 1, by name."""
    own = sorted((p.parent.name.lower(), p) for p in faces.glob("*/*") if p.is_file())
    lfw_images = sorted((p.parent.name.lower(), p) for p in lfw.glob("*/*.jpg"))
    return own + lfw_images


def augment(image: BGRImage, rng: np.random.Generator) -> tuple[BGRImage, list[str]]:
    """One random, non-empty mix of the augmentations (each with probability 1/2), applied in order."""
    chosen = [name for name in AUGMENTATIONS if rng.random() < 0.5] or [str(rng.choice(AUGMENTATIONS))]
    out = image
    height, width = image.shape[:2]
    for name in chosen:
        if name == "flip":
            out = cv2.flip(out, 1)
        elif name == "crop_scale":  # keep 80-95% of each side, off-centre, then resize by 0.6-1.2
            keep = rng.uniform(0.80, 0.95)
            h, w = int(height * keep), int(width * keep)
            y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            scale = rng.uniform(0.6, 1.2)
            out = cv2.resize(out[y:y + h, x:x + w], (max(32, int(w * scale)), max(32, int(h * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        elif name == "brightness_contrast":
            alpha, beta = rng.uniform(0.6, 1.4), rng.uniform(-40, 40)
            out = cv2.convertScaleAbs(out, alpha=alpha, beta=beta)
        elif name == "blur":
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 2.0))
        elif name == "jpeg":
            ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 50))])
            if ok:
                out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(out), chosen


def embed_real_faces(engine: FaceEngine, images: list[tuple[str, Path]], n_augment: int,
                     seed: int) -> tuple[RealFaces, bool]:
    """Embeddings of the main face of every image and its augmentations; from the cache when it matches."""
    if not images:
        raise SystemExit("no images found: set FACETRAIL_SHARED_DATA to the shared data folder")
    key_text = "\n".join(str(p) for _, p in images) + f"|{n_augment}|{seed}|{AUGMENT_VERSION}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    stem = CACHE_DIR / f"real-{engine.recogniser.name}-aug{n_augment}-{key}"
    npy, meta_file = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.is_file() and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        return RealFaces(np.load(npy), meta["people"], meta["photos"], meta["variants"], meta["photo_paths"],
                         meta["model_id"], meta["no_face"]), True
    rows: list[F32] = []
    people: list[str] = []
    photos: list[int] = []
    variants: list[int] = []
    no_face = 0
    model_id = ""
    pending: list[tuple[BGRImage, str, int, int]] = []

    def flush() -> None:
        nonlocal no_face, model_id
        found = engine.analyze_many([item[0] for item in pending])
        for (_, person, photo, variant), faces in zip(pending, found, strict=True):
            main = faces.primary()
            if main is None:
                no_face += 1
                continue
            rows.append(np.asarray(faces.embeddings.vectors[main], np.float32))
            model_id = faces.embeddings.model_id
            people.append(person)
            photos.append(photo)
            variants.append(variant)
        pending.clear()

    for photo, (person, path) in enumerate(images):
        try:
            image = load_image(path)
        except ImageError:
            no_face += 1 + n_augment
            continue
        rng = np.random.default_rng([seed, photo])
        pending.append((image, person, photo, 0))
        pending.extend((augment(image, rng)[0], person, photo, v) for v in range(1, n_augment + 1))
        if len(pending) >= ENGINE_BATCH:
            flush()
    if pending:
        flush()
    vectors = np.stack(rows).astype(np.float32)
    paths = [str(p) for _, p in images]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(npy, vectors)
    meta_file.write_text(json.dumps({"people": people, "photos": photos, "variants": variants,
                                     "photo_paths": paths, "model_id": model_id, "no_face": no_face}))
    return RealFaces(vectors, people, photos, variants, paths, model_id, no_face), False


# --------------------------------------------------------------------------- roles


@dataclass
class Roles:
    """Which real rows are queries and which are in the gallery."""

    query_rows: I64  # rows of the original query photos
    gallery_rows: I64  # every other real row (query photos' augmentations excluded)
    enrolled_people: int
    people_with_one_photo: int


def assign_roles(real: RealFaces, n_queries: int, seed: int) -> Roles:
    """Queries: other (original) photos of people with two or more; their people enrolled with their other
    originals; everyone else with their photos and augmentations (see the module doc)."""
    originals: dict[str, list[int]] = defaultdict(list)  # person -> rows of original photos
    for row, (person, variant) in enumerate(zip(real.people, real.variants, strict=True)):
        if variant == 0:
            originals[person].append(row)
    rng = np.random.default_rng([seed, 7])
    candidates = [row for rows in originals.values() if len(rows) >= 2 for row in rows[1:]]
    picked = np.sort(rng.choice(np.asarray(candidates), min(n_queries, len(candidates)), replace=False))
    query_photos = {real.photos[row] for row in picked.tolist()}
    query_people = {real.people[row] for row in picked.tolist()}
    gallery = [row for row, (photo, person, variant) in enumerate(zip(real.photos, real.people, real.variants,
                                                                        strict=True))
               if photo not in query_photos and (variant == 0 or person not in query_people)]
    return Roles(picked.astype(np.int64), np.asarray(gallery, np.int64),
                 sum(1 for rows in originals.values() if len(rows) >= 2),
                 sum(1 for rows in originals.values() if len(rows) == 1))


# --------------------------------------------------------------------------- synthetic filler


def _psd_root(cov: npt.NDArray[np.float64]) -> F32:
    """A symmetric square root of a covariance, negative eigenvalues (estimation noise) clipped to 0."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return np.asarray((vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T, np.float32)


@dataclass
class FillerModel:
    """Three-level Gaussian model of a face gallery, estimated from real embeddings (see module doc)."""

    mean: F32
    photo: F32  # square roots of the covariances: a photo around the mean (between + within), augmentation
    aug: F32
    templates_per_photo: int
    variances: tuple[float, float, float]  # traces: between, within (photo to photo), augmentation

    @classmethod
    def fit(cls, real: RealFaces, rows: I64, templates_per_photo: int) -> FillerModel:
        """Estimate from the real ``rows`` (the gallery's, so the queries are not fitted)."""
        x = real.vectors[rows].astype(np.float64)
        people = [real.people[r] for r in rows.tolist()]
        photos = [real.photos[r] for r in rows.tolist()]
        variants = [real.variants[r] for r in rows.tolist()]
        by_photo: dict[int, list[int]] = defaultdict(list)
        for i, photo in enumerate(photos):
            by_photo[photo].append(i)
        # augmentation spread: augmented rows around their original photo
        aug_dev = [x[i] - x[members[0]] for members in by_photo.values() if variants[members[0]] == 0
                   for i in members[1:]]
        aug_cov = np.cov(np.asarray(aug_dev).T, bias=True) if aug_dev else np.zeros((x.shape[1],) * 2)
        # photo-to-photo spread within a person, on the originals only
        originals = [i for i, v in enumerate(variants) if v == 0]
        by_person: dict[str, list[int]] = defaultdict(list)
        for i in originals:
            by_person[people[i]].append(i)
        within_dev = []
        for members in by_person.values():
            if len(members) >= 2:
                block = x[members]
                centred = (block - block.mean(axis=0)) * np.sqrt(len(members) / (len(members) - 1))
                within_dev.extend(centred)
        within_cov = np.cov(np.asarray(within_dev).T, bias=True)
        total_cov = np.cov(x[originals].T)
        between_cov = total_cov - within_cov
        mean = x[originals].mean(axis=0)
        between_var = float(np.clip(np.linalg.eigvalsh(between_cov), 0, None).sum())
        return cls(mean.astype(np.float32), _psd_root(between_cov + within_cov), _psd_root(aug_cov),
                   templates_per_photo, (between_var, float(np.trace(within_cov)), float(np.trace(aug_cov))))

    def draw(self, n: int, rng: np.random.Generator) -> F32:
        """``n`` unit templates: identities of ``templates_per_photo`` templates each (the last cut short)."""
        dim = self.mean.shape[0]
        t = self.templates_per_photo
        photos = -(-n // t)
        # centre + photo-to-photo deviation in one draw: one photo per synthetic identity, as a distractor has
        deviation = rng.standard_normal((photos, dim), dtype=np.float32) @ self.photo
        out = np.repeat(deviation, t, axis=0)[:n]
        out += rng.standard_normal((n, dim), dtype=np.float32) @ self.aug
        out += self.mean
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


# --------------------------------------------------------------------------- the gallery, in chunks


@dataclass
class Gallery:
    """``size`` templates, row i has id i: the real gallery rows at seeded positions, synthetic elsewhere."""

    size: int
    real: RealFaces
    real_rows: I64  # real row placed at each of ``positions``
    positions: I64  # sorted gallery ids holding real rows
    model: FillerModel
    seed: int
    chunk: int = 200_000

    @classmethod
    def make(cls, size: int, real: RealFaces, roles: Roles, model: FillerModel, seed: int,
             chunk: int = 200_000) -> Gallery:
        if roles.gallery_rows.size > size:
            raise SystemExit(f"--size {size:,} is smaller than the {roles.gallery_rows.size:,} real gallery rows")
        rng = np.random.default_rng([seed, 11])
        positions = np.sort(rng.choice(size, roles.gallery_rows.size, replace=False)).astype(np.int64)
        rows = rng.permutation(roles.gallery_rows).astype(np.int64)
        return cls(size, real, rows, positions, model, seed, chunk)

    def chunks(self) -> Iterator[tuple[I64, F32]]:
        """(ids, unit vectors) of every chunk in order; the same every time."""
        for number in range(-(-self.size // self.chunk)):
            yield self.make_chunk(number)

    def make_chunk(self, number: int) -> tuple[I64, F32]:
        """(ids, unit vectors) of chunk ``number``, drawn from its own seed."""
        start = number * self.chunk
        stop = min(self.size, start + self.chunk)
        vectors = self.model.draw(stop - start, np.random.default_rng([self.seed, 1000 + number]))
        lo, hi = np.searchsorted(self.positions, [start, stop])
        vectors[self.positions[lo:hi] - start] = self.real.vectors[self.real_rows[lo:hi]]
        return np.arange(start, stop, dtype=np.int64), vectors

    def vectors_of(self, ids: I64) -> F32:
        """The vectors of ``ids``: real rows directly, synthetic ones by remaking only their chunks."""
        out = np.empty((ids.size, self.model.mean.shape[0]), np.float32)
        at = np.minimum(np.searchsorted(self.positions, ids), self.positions.size - 1)
        real = self.positions[at] == ids
        out[real] = self.real.vectors[self.real_rows[at[real]]]
        for number in np.unique(ids[~real] // self.chunk).tolist():
            chunk_ids, vectors = self.make_chunk(number)
            mine = ~real & (ids // self.chunk == number)
            out[mine] = vectors[ids[mine] - chunk_ids[0]]
        return out

    def person_of(self) -> dict[int, str]:
        """Gallery id -> person, for the real rows."""
        return {int(p): self.real.people[r] for p, r in zip(self.positions.tolist(), self.real_rows.tolist(),
                                                            strict=True)}


# --------------------------------------------------------------------------- statistics


def anisotropy(vectors: F32) -> tuple[float, float]:
    """Share of the variance in the top 10 and top 50 principal components."""
    centred = vectors - vectors.mean(axis=0)
    values = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1]
    return float(values[:10].sum() / values.sum()), float(values[:50].sum() / values.sum())


def impostor_check(real: RealFaces, roles: Roles, model: FillerModel, seed: int) -> dict[str, object]:
    """Query-to-distractor cosines: real strangers against an equal number of synthetic templates.

    Per query, the real distractors are the gallery rows of other people; the
    synthetic ones are as many templates drawn from the model. Reported:
    quantiles of every impostor cosine and of each query's top-1 impostor.
    """
    queries = real.vectors[roles.query_rows]
    gallery = real.vectors[roles.gallery_rows]
    gallery_people = np.asarray([real.people[r] for r in roles.gallery_rows.tolist()])
    synthetic = model.draw(gallery.shape[0], np.random.default_rng([seed, 99]))
    real_scores = queries @ gallery.T
    synth_scores = queries @ synthetic.T
    same = np.asarray([real.people[r] for r in roles.query_rows.tolist()])[:, None] == gallery_people[None, :]
    real_scores[same] = -np.inf
    # drop as many synthetic columns per query as that query has mates, so both sides have equal counts
    mates = same.sum(axis=1)
    for i, m in enumerate(mates.tolist()):
        if m:
            synth_scores[i, :m] = -np.inf
    q = [0.5, 0.9, 0.99, 0.999]
    real_all = real_scores[np.isfinite(real_scores)]
    synth_all = synth_scores[np.isfinite(synth_scores)]
    top_q = [0.1, 0.5, 0.9, 0.99]
    real_top, synth_top = real_scores.max(axis=1), synth_scores.max(axis=1)
    mated = np.where(same, queries @ gallery.T, -np.inf).max(axis=1)
    return {
        "distractors_per_query": int(gallery.shape[0] - mates.max()),
        "all_quantiles": q,
        "real_all": [round(float(v), 4) for v in np.quantile(real_all, q)],
        "synthetic_all": [round(float(v), 4) for v in np.quantile(synth_all, q)],
        "real_all_mean_sd": [round(float(real_all.mean()), 4), round(float(real_all.std()), 4)],
        "synthetic_all_mean_sd": [round(float(synth_all.mean()), 4), round(float(synth_all.std()), 4)],
        "top1_quantiles": top_q,
        "real_top1": [round(float(v), 4) for v in np.quantile(real_top, top_q)],
        "synthetic_top1": [round(float(v), 4) for v in np.quantile(synth_top, top_q)],
        "mated_top1": [round(float(v), 4) for v in np.quantile(mated, top_q)],
        "top1_ks_distance": round(ks_distance(real_top, synth_top), 4),
    }


def ks_distance(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs)."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / a.size
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())
