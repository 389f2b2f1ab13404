"""dotflow-api: the self-hostable reference server for dotflow's managed mode.

Runners report workflows and tasks over HTTP; each bearer token sees only its own
data. ``create_app`` builds the ASGI application, ``dotflow-api serve`` runs it.
"""

from dotflow_api._version import __version__

__all__ = ["__version__"]
