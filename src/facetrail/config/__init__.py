"""The YAML configuration of `facetrail run`: schema, loading, errors with lines."""
