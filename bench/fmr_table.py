"""The false-match-rate table of a recogniser: FMR -> cosine, with FNMR, on every pair of LFW View 1's images.

    .venv/bin/python bench/fmr_table.py [--recogniser arcface] [--embeddings cache.npz]

Every image under ../shared/data/lfw-view1/images is embedded (its primary
face, the default engine); ALL pairs of different people are the impostor
pairs (about 12.4 million) and all pairs of one person the genuine pairs.
People LFW files under two names count as one person (ALIASES). For each
false match rate the cosine is the k-th highest impostor score (k = FMR x
pairs) plus half a unit of the 4th decimal, rounded to 4 decimals; FNMR is
the share of genuine pairs below it. ``--embeddings`` reads a cached npz
(``paths`` relative Name/Name_NNNN.jpg, ``embeddings``, ``found``) instead of
embedding (~4 minutes on one core for arcface). The printed rows are what
``facetrail.vision.registry`` stores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-view1" / "images"
RATES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# One person under two LFW names (checked by eye: the same face in both folders).
ALIASES = {"Sepp_Blatter": "Joseph_Blatter", "Sung_Hong_Choi": "Choi_Sung-hong", "Hassan_Wirajuda": "Hasan_Wirayuda",
           "Wang_Nan": "Nan_Wang", "Muhammad_Ibrahim_Bilal": "Ahmed_Ibrahim_Bilal"}


def embed(recogniser: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(relative paths, embeddings, found) of every LFW View 1 image."""
    from facetrail.vision.engine import EngineConfig, FaceEngine
    from facetrail.vision.image import load_image

    engine = FaceEngine(EngineConfig(recogniser=recogniser, threads=1))  # type: ignore[arg-type]
    paths = sorted(ROOT.glob("*/*.jpg"))
    vectors: list[np.ndarray | None] = []
    for number, path in enumerate(paths):
        faces = engine.analyze(load_image(path))
        index = faces.primary()
        vectors.append(None if index is None else faces.embeddings.vectors[index])
        if number % 500 == 0:
            print(f"{number}/{len(paths)}", file=sys.stderr, flush=True)
    dim = next(v for v in vectors if v is not None).shape[0]
    found = np.array([v is not None for v in vectors])
    stacked = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in vectors])
    return [str(p.relative_to(ROOT)) for p in paths], stacked, found


def table(paths: list[str], embeddings: np.ndarray, found: np.ndarray) -> None:
    """Print the FMR -> cosine, FNMR rows and the pair counts."""
    vectors = embeddings[found].astype(np.float32)
    people = np.array([ALIASES.get(p.split("/")[0], p.split("/")[0]) for p, f in zip(paths, found, strict=True) if f])
    upper = np.triu_indices(len(vectors), 1)
    scores = (vectors @ vectors.T)[upper]
    same = people[upper[0]] == people[upper[1]]
    impostors = np.sort(scores[~same])[::-1]
    genuine = scores[same]
    print(f"{len(vectors)} faces of {len(paths)} images, {len(set(people))} people; "
          f"{len(impostors):,} impostor pairs, {len(genuine):,} genuine pairs")
    print(f"genuine pairs above 0.8: {(genuine > 0.8).mean():.1%} (highest {genuine.max():.3f})")
    for rate in RATES:
        cosine = round(float(impostors[int(rate * len(impostors))]) + 5e-5, 4)
        measured = float((impostors >= cosine).mean())
        print(f"FmrPoint({rate:.0e}, {cosine:.4f}, {float((genuine < cosine).mean()):.4f})  "
              f"# measured FMR {measured:.2e} ({int((impostors >= cosine).sum())} pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recogniser", default="arcface", choices=["arcface", "dlib"])
    parser.add_argument("--embeddings", type=Path, help="a cached npz instead of embedding the images")
    args = parser.parse_args()
    if args.embeddings:
        cached = np.load(args.embeddings)
        table([str(p) for p in cached["paths"]], cached["embeddings"], cached["found"])
    else:
        table(*embed(args.recogniser))


if __name__ == "__main__":
    main()
