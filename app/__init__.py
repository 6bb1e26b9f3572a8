"""The REST service: FastAPI routes over datasets, jobs, events and noise reports (no torch here)."""
