"""health-check: on each timer run, checks every target and publishes one report to a topic.

A target is ``fn:<function>`` (called through the platform with ``context.invoke``: any 2xx
answer is healthy) or an ``http://`` / ``https://`` URL (a GET; any status below 400 is
healthy). Each check has its own time limit, so one hanging service delays the report by
``HEALTH_TIMEOUT`` at most, and a failing one never stops the others from being checked.

Configuration (environment variables of the function):
  HEALTH_TARGETS  comma-separated targets
  HEALTH_TOPIC    where reports go (default health-reports)
  HEALTH_TIMEOUT  seconds per URL check (default 5)
"""

import os
import time
import urllib.error
import urllib.request

from fissile.runtime.context import PlatformError


def check_function(context, name):
    try:
        reply = context.invoke(name)
    except PlatformError as exc:
        return {"ok": False, "status": None, "error": f"platform: {exc}"}
    if reply.ok:
        return {"ok": True, "status": reply.status, "error": None}
    return {"ok": False, "status": reply.status, "error": reply.text[:200]}


def check_url(url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return {"ok": True, "status": answer.status, "error": None}
    except urllib.error.HTTPError as exc:
        return {"ok": exc.code < 400, "status": exc.code, "error": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, not a URL
        reason = getattr(exc, "reason", None) or exc
        return {"ok": False, "status": None, "error": str(reason)}


def check(context, target, timeout):
    began = time.monotonic()
    if target.startswith("fn:"):
        outcome = check_function(context, target[3:])
    elif target.startswith(("http://", "https://")):
        outcome = check_url(target, timeout)
    else:
        outcome = {"ok": False, "status": None, "error": "not a target: use fn:NAME or a URL"}
    latency = round((time.monotonic() - began) * 1000, 1)
    return {"target": target, **outcome, "latency_ms": latency}


def main(request, context):
    targets = [t.strip() for t in os.environ.get("HEALTH_TARGETS", "").split(",") if t.strip()]
    if not targets:
        return {"error": "HEALTH_TARGETS names no target"}, 500
    timeout = float(os.environ.get("HEALTH_TIMEOUT", "5"))
    results = [check(context, target, timeout) for target in targets]
    report = {
        # The timer's slot names the run; a call by hand has its invocation id instead.
        "run": request.headers.get("x-fissile-timer-slot") or context.invocation_id,
        "healthy": sum(r["ok"] for r in results),
        "unhealthy": sum(not r["ok"] for r in results),
        "results": results,
    }
    context.publish(os.environ.get("HEALTH_TOPIC", "health-reports"), report)
    return report
