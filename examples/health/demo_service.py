"""demo-service: a stand-in for a service to watch, healthy as long as it answers."""

import time

STARTED = time.time()


def main(request):
    return {"status": "ok", "up_seconds": round(time.time() - STARTED, 1)}
