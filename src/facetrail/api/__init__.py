"""The REST API (`facetrail serve`): versioned resources under /api/v1, API keys with roles, audited."""
