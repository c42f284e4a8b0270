"""wxsub: e-commerce events in, WeChat Mini Program subscribe messages out, exactly once."""

__all__ = ["__version__"]

__version__ = "0.1.0"
