"""dotflow-server-api: the ``api`` provider, dotflow's managed mode.

With ``SERVER_BASE_URL`` and ``SERVER_USER_TOKEN`` set, ``dotflow start``
selects this provider and reports every workflow and task event to the
server, without slowing the workflow (hooks only queue), crashing it (every
failure is contained) or losing events (bounded retries in the process, then
a durable outbox replayed by the next run). In code::

    from dotflow_core import DotFlow
    from dotflow_server_api import ServerAPI

    workflow = DotFlow(providers=[ServerAPI(base_url="https://host/api/v1", token="...")])
"""

from __future__ import annotations

from dotflow_server_api._version import __version__
from dotflow_server_api.provider import ServerAPI, api

__all__ = ["ServerAPI", "__version__", "api"]
