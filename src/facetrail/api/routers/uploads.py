"""Reading an uploaded image with a size limit, before anything is written; finding its main face."""

from __future__ import annotations

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from facetrail.api.errors import ApiError
from facetrail.gallery.gallery import Gallery
from facetrail.vision.image import load_image


def read_upload(request: Request, upload: UploadFile) -> bytes:
    """The upload's bytes; 413 when larger than the configured limit, 422 when empty."""
    limit: int = request.app.state.settings.max_upload_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"the upload is larger than {limit // 1_000_000} MB; send a smaller image")
    if not data:
        raise ApiError(422, "bad_image", "the upload is empty; send a JPEG or PNG photo")
    return data


def face_of_upload(request: Request, store: Gallery, image: UploadFile) -> tuple[np.ndarray, str]:
    """The embedding of the upload's main face and the model that made it; 422 without a face."""
    faces = store.engine.analyze(load_image(read_upload(request, image), name=image.filename or "upload"))
    index = faces.primary()
    if index is None:
        raise ApiError(422, "no_face", "no face found in the image; send a sharper, frontal photo")
    return faces.embeddings.vectors[index], faces.embeddings.model_id
