"""Business logic called by the routes; raises ``app.errors`` domain errors, knows nothing of HTTP."""
