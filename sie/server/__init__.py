"""The score server: a Flask application (``create_app``) hosted by gunicorn (``sie serve``)."""

from sie.server.app import create_app

__all__ = ["create_app"]
