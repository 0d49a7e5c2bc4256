"""The video pipeline: cameras in, tracks, sightings and events out (`facetrail run`)."""
