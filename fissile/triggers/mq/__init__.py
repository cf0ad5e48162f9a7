from fissile.triggers.mq.base import (
    BROKERS,
    Broker,
    BrokerError,
    Delivery,
    Message,
    MissingExtra,
    Subscription,
    broker_class,
)

__all__ = [
    "BROKERS",
    "Broker",
    "BrokerError",
    "Delivery",
    "Message",
    "MissingExtra",
    "Subscription",
    "broker_class",
]
