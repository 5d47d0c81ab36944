"""sladd: streaming anonymisation of street-level imagery."""
__version__ = "0.1.0"
__all__ = ["__version__"]
