"""fissile: a Python-native, self-hosted serverless platform on Fission's model."""

from fissile.runtime import Context, Request, Response

__version__ = "0.1.0"

__all__ = ["Context", "Request", "Response", "__version__"]
