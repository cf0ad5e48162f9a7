"""health-alerts: consumes the health reports (an MQ trigger on their topic) and turns each
unhealthy result into an alert. Each alert is logged as a warning, and the alerts of a report
are its answer, which the trigger publishes to its response topic (``health-alerts``) for a
pager, a chat or a dashboard to pick up."""


def alerts(report):
    return [
        {
            "run": report["run"],
            "target": result["target"],
            "status": result["status"],
            "error": result["error"],
        }
        for result in report["results"]
        if not result["ok"]
    ]


def main(request, context):
    report = request.json()
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        # Raised, not answered: after the trigger's retries it lands on the error topic.
        raise ValueError("not a health report: expected an object with results")
    found = alerts(report)
    for alert in found:
        context.logger.warning(
            "ALERT %s is down (%s): %s", alert["target"], alert["status"], alert["error"]
        )
    context.logger.info("run %s: %d healthy, %d down", report["run"], report["healthy"], len(found))
    return {"run": report["run"], "alerts": found}
