"""Monitoring: windows of request statistics, drift and alerts, computed from what the
server answered (its request log and in-memory rings). The server serves them at
``GET /monitor``; widgets and the CLI read them over HTTP."""
