"""Typed errors of the video layer, and masking of credentials in the sources they name."""

from __future__ import annotations

import re

# scheme://user:password@ (a password may contain "@"; it cannot contain "/" or blanks).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*):[^\s/]*@")
# Query parameters that carry secrets in camera URLs (e.g. snapshot.cgi?user=admin&pwd=...).
_SECRET_QUERY = re.compile(r"(?i)([?&](?:pass|passwd|password|pwd|token|key|auth|secret|signature)=)[^&\s#]*")


class VideoError(Exception):
    """Base class of every error the video layer raises on purpose."""


class SourceError(VideoError):
    """A video source cannot be opened or read; ``source`` is the path with credentials masked."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(message)
        self.source = source


class SourceOpenError(SourceError):
    """The file, folder or stream cannot be opened."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(source, f"cannot open {source}: {reason}")
        self.reason = reason


class SourceReadError(SourceError):
    """Decoding failed after the source was opened (damaged file, broken connection)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(source, f"error reading {source}: {reason}")
        self.reason = reason


class StreamEndedError(SourceError):
    """A live stream reached its end, which for a camera means the connection dropped."""

    def __init__(self, source: str) -> None:
        super().__init__(source, f"{source}: the stream ended (connection closed by the camera or server)")


def mask_credentials(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced by ``***``.

    ``rtsp://user:pw@host/x`` becomes ``rtsp://user:***@host/x``; works on paths, URLs and log messages.
    """
    return _SECRET_QUERY.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))
