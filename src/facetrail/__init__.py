"""facetrail: self-hosted face recognition for many cameras, accountable by design."""

__version__ = "0.1.0"
