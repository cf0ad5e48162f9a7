"""Testing functions written for fissile, at each level (docs/testing.md):

- unit: ``make_request`` and ``make_context`` (recording fakes of ``invoke``, ``publish`` and
  the logger), ``call`` for native functions, ``call_fission``/``flask_request`` for
  Fission-style ones, ``call_contract`` for any contract;
- integration: ``invoke_local``/``local_instance`` run a function in a real instance
  subprocess, without a platform;
- system: ``Platform`` (and the ``fissile_platform`` pytest fixtures) start a throw-away
  ``fissile up``.
"""

from fissile.runtime.context import Reply
from fissile.testing._call import call, call_async, call_contract, call_fission, flask_request
from fissile.testing._context import FakeContext, Invocation, Published, make_context
from fissile.testing._local import LocalInstance, invoke_local, local_instance
from fissile.testing._platform import CLIResult, Platform, PlatformFailure, wait_for
from fissile.testing._requests import make_request
from fissile.testing._result import Result

__all__ = [
    "CLIResult",
    "FakeContext",
    "Invocation",
    "LocalInstance",
    "Platform",
    "PlatformFailure",
    "Published",
    "Reply",
    "Result",
    "call",
    "call_async",
    "call_contract",
    "call_fission",
    "flask_request",
    "invoke_local",
    "local_instance",
    "make_context",
    "make_request",
    "wait_for",
]
