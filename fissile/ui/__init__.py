"""The web dashboard at ``/ui`` on the control API: pages, their templates and static files."""

from fissile.ui.routes import add_dashboard

__all__ = ["add_dashboard"]
