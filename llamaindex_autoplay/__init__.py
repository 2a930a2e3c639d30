"""LlamaIndex adapters for autoplay live context."""

__all__: list[str] = []
