"""fissile's own contract: ``main(request)`` or ``main(request, context)``, sync or async."""

from __future__ import annotations

from fissile.runtime.contracts._handler import Handler, Target, required_positional


def bind(target: Target) -> Handler:
    func = target.func
    arity = required_positional(func)
    if arity == 1:
        return Handler(func, "native", lambda request, context: func(request))
    if arity == 2:
        return Handler(func, "native", func)
    raise TypeError(
        f"{getattr(func, '__name__', func)!r} takes {arity} arguments;"
        " a native function is main(request) or main(request, context)"
        " (a Fission-style main() takes none; see --contract for other platforms)"
    )
