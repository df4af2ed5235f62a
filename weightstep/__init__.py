"""weightstep: code a video as a network fitted to its first frame plus sparse weight steps."""

__version__ = "0.1.0"
