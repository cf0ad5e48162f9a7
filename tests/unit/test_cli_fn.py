"""fissile/cli/fn.py: what `fn update` carries over from the stored function."""

from __future__ import annotations

from fissile.cli.fn import SPEC_FIELDS
from fissile.models import FunctionSpec


def test_update_carries_every_field_of_a_function_spec() -> None:
    # A field missing from SPEC_FIELDS was silently reset by every `fn update`
    # (async_retries was).
    assert set(SPEC_FIELDS) == set(FunctionSpec.model_fields)
