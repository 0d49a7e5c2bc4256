"""The dashboard: server-rendered pages over the same store and rules as the REST API (no CDN, no build step)."""
