"""The broker hub's refusals for publishers outside the platform: each with its status."""

from __future__ import annotations

from pathlib import Path

import pytest

from fissile.triggers.mq import base
from fissile.triggers.mq.hub import BrokerHub, Refused


async def test_unknown_mqtype_and_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = BrokerHub(tmp_path / "mq.db")
    with pytest.raises(Refused) as unknown:
        await hub.deliver("sqs", "t", b"x", {}, None)
    assert unknown.value.status == 422 and "known: embedded" in unknown.value.message

    monkeypatch.setitem(
        base.BROKERS, "kafka", ("fissile.triggers.mq.kafka:KafkaBroker", "kafka", "no_such_client")
    )
    with pytest.raises(Refused) as missing:
        await hub.deliver("kafka", "t", b"x", {}, None)
    assert missing.value.status == 422
    assert missing.value.code == "missing_extra"
    assert "pip install 'fissile[kafka]'" in missing.value.message

    with pytest.raises(Refused) as embedded_url:
        await hub.deliver("embedded", "t", b"x", {}, "sqlite:///elsewhere")
    assert embedded_url.value.status == 422
    await hub.close()


async def test_embedded_publishes_land_in_the_data_dir(tmp_path: Path) -> None:
    hub = BrokerHub(tmp_path / "mq.db")
    await hub.deliver("embedded", "t", b"hello", {"content-type": "text/plain"}, None)
    broker = await hub.get("embedded")
    (delivery,) = await (await broker.subscribe("t", "g")).fetch(1, 0.1)
    assert delivery.message.body == b"hello"
    assert (tmp_path / "mq.db").exists()
    await hub.close()
