"""The package version, in one place (read by hatchling and ``autoplay_base.__version__``)."""

__version__ = "0.1.0"
