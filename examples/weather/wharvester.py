"""wharvester: on each timer run, one weather reading per station, published to a topic.

A real harvester would call a weather service here; this one derives each reading from the
station and the timer slot (a hash), so the pipeline runs offline and a test can tell exactly
what each reading must become. The station ``broken-sensor`` reports no temperature, which
wprocessor refuses: its readings end on the error topic.

Configuration (environment variables of the function):
  WEATHER_STATIONS    comma-separated station names
  WEATHER_TOPIC       where readings go (default weather-readings)
  WEATHER_MQTYPE      embedded | redis | nats | rabbitmq | kafka (default embedded)
  WEATHER_BROKER_URL  the broker's URL (default: its local default)
"""

import hashlib
import os

DEFAULT_STATIONS = "oslo,lima,nairobi,perth,reykjavik,broken-sensor"


def reading(station, slot):
    digest = hashlib.sha256(f"{station}/{slot}".encode()).digest()
    temp_c = None if station == "broken-sensor" else round(-30 + digest[0] / 255 * 75, 1)
    return {
        "id": f"{station}/{slot}",
        "station": station,
        "slot": slot,
        "temp_c": temp_c,
        "humidity": digest[1] % 101,
        "wind_kmh": digest[2] % 120,
    }


def main(request, context):
    slot = request.headers.get("x-fissile-timer-slot") or context.invocation_id
    stations = os.environ.get("WEATHER_STATIONS", DEFAULT_STATIONS).split(",")
    topic = os.environ.get("WEATHER_TOPIC", "weather-readings")
    mqtype = os.environ.get("WEATHER_MQTYPE", "embedded")
    url = os.environ.get("WEATHER_BROKER_URL") or None
    for station in stations:
        context.publish(topic, reading(station, slot), mqtype=mqtype, broker_url=url)
    return {"slot": slot, "published": len(stations)}
