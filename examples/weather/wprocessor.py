"""wprocessor: turns one raw reading into a processed one. Its MQ trigger publishes the result
to the response topic; a reading it cannot process raises, and after the trigger's retries the
reading lands on the error topic.

WEATHER_PROCESS_DELAY (seconds, default 0) makes each call take longer, to build a backlog.
"""

import os
import time


def category(temp_c, wind_kmh):
    if temp_c <= 0:
        return "freezing"
    if wind_kmh >= 75:
        return "stormy"
    if temp_c >= 30:
        return "hot"
    return "mild"


def process(reading):
    temp_c = reading.get("temp_c")
    if not isinstance(temp_c, int | float):
        raise ValueError(f"reading {reading.get('id')}: no temperature")
    return {
        "id": reading["id"],
        "station": reading["station"],
        "slot": reading["slot"],
        "temp_c": temp_c,
        "temp_f": round(temp_c * 9 / 5 + 32, 1),
        "humidity": reading["humidity"],
        "category": category(temp_c, reading["wind_kmh"]),
    }


def main(request):
    delay = float(os.environ.get("WEATHER_PROCESS_DELAY", "0"))
    if delay:
        time.sleep(delay)
    return process(request.json())
