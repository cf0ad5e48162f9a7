"""fissile/cli/fn.py: what `fn update` carries over from the stored function."""

from __future__ import annotations

from fissile.cli.fn import SPEC_FIELDS
from fissile.models import FunctionSpec


def test_update_carries_every_field_of_a_function_spec() -> None:
    # A field missing from SPEC_FIELDS was silently reset by every `fn update`
    # (async_retries was).
    assert set(SPEC_FIELDS) == set(FunctionSpec.model_fields)


def test_the_cli_offers_every_contract_the_models_and_the_runtime_know() -> None:
    from typing import get_args

    from fissile.cli._params import CONTRACTS
    from fissile.models import Contract
    from fissile.runtime.contracts import NAMES

    assert set(CONTRACTS) == set(get_args(Contract)) == set(NAMES)
