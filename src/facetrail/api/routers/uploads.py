"""Reading an uploaded image with a size limit, before anything is written."""

from __future__ import annotations

from fastapi import Request, UploadFile

from facetrail.api.errors import ApiError


def read_upload(request: Request, upload: UploadFile) -> bytes:
    """The upload's bytes; 413 when larger than the configured limit, 422 when empty."""
    limit: int = request.app.state.settings.max_upload_bytes
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "too_large", f"the upload is larger than {limit // 1_000_000} MB; send a smaller image")
    if not data:
        raise ApiError(422, "bad_image", "the upload is empty; send a JPEG or PNG photo")
    return data
