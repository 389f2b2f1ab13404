"""The web dashboard served by ``dotflow-api serve``: sign in with a token, see your runs."""

from dotflow_api.dashboard.routes import install

__all__ = ["install"]
