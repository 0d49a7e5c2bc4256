"""One module per area of the dashboard."""
