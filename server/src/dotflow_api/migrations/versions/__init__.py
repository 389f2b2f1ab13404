"""One module per schema revision, oldest first (``0001_initial`` is dotflow-api 0.1.0)."""
