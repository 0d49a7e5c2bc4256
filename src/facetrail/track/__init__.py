"""Per-camera face tracking: tracks, their best shots, the identity decision per track, unknown visitors."""
