"""The web dashboard at ``/ui`` on the control API: pages (``routes.py``), their templates and
static files. Nothing is imported here: the control API imports ``routes`` when it is made."""
