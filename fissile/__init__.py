"""fissile: a Python-native, self-hosted serverless platform on Fission's model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fissile.runtime import Context, Request, Response

__version__ = "0.1.0"

__all__ = ["Context", "Request", "Response", "__version__", "config", "secret"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the runtime pulls in http.client, ssl and email (~30-100 ms), which
    # processes that only need a submodule (a build's sandbox helper, the CLI) never use.
    if name in ("Context", "Request", "Response"):
        import fissile.runtime

        return getattr(fissile.runtime, name)
    if name in ("secret", "config"):
        # fissile.secret(name, key), fissile.config(name, key): fissile/runtime/values.py.
        import fissile.runtime.values

        return getattr(fissile.runtime.values, name)
    raise AttributeError(f"module 'fissile' has no attribute {name!r}")
