"""The version of the dotflow-api distribution."""

__version__ = "0.1.0"
