"""``python -m dotflow_core.cli``: the same as the ``dotflow`` command."""

from dotflow_core.cli import console_main

raise SystemExit(console_main())
