"""The monitoring dashboard, `GET /ui`: server-rendered pages over the API's pool, behind
the API's token (docs/dashboard.md). `UI_ROUTES` is mounted by server/app.py."""

from boundq.server.ui.routes import UI_ROUTES

__all__ = ["UI_ROUTES"]
