"""Storage backends: in-memory (default) and Redis (``autoplay_base.backends.redis``)."""
