"""``python -m dotflow_api`` is the same as the ``dotflow-api`` command."""

from dotflow_api.cli import main

raise SystemExit(main())
