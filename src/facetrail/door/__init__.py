"""Door access: liveness from the video itself, built on the vision layer's landmarks."""
