"""Settings: where configuration comes from and how providers read it.

One mechanism serves every provider: :class:`Settings` carries the process
environment and the ``[tool.dotflow]`` table of the nearest ``pyproject.toml``
(or a ``dotflow.toml``), and reaches each provider through the ``configure``
hook. A provider reads its own keys with :meth:`Settings.lookup` (environment
first, then the file) and its secrets with :meth:`Settings.secret` (environment,
or a file readable only by its owner, never the project file).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from dotflow_core.errors import ConfigurationError

#: Points at a config file explicitly, instead of searching from the working directory.
CONFIG_FILE_ENV = "DOTFLOW_CONFIG"
#: Overrides the user's dotflow directory (default ``~/.dotflow``).
HOME_ENV = "DOTFLOW_HOME"
#: Name of the standalone config file; its top level holds what ``[tool.dotflow]`` would.
STANDALONE_CONFIG_NAME = "dotflow.toml"
PYPROJECT_NAME = "pyproject.toml"


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or tracebacks.

    Call :meth:`reveal` at the one place the real value is needed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret takes a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac  # rarely needed; its import (OpenSSL's hashes) is not free

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled; pass it through settings instead")


def user_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's dotflow directory (``$DOTFLOW_HOME``, else ``~/.dotflow``); not created here."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(HOME_ENV) or Path.home() / ".dotflow").expanduser()


#: How a boolean setting may be written (any case, surrounding spaces ignored).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
#: What a boolean setting's error message says is valid.
FLAG_CHOICES = "true/false (1/0, yes/no, on/off)"


def parse_flag(value: Any) -> bool | None:
    """A boolean setting's value: a bool, or a word of TRUE_WORDS / FALSE_WORDS.

    :returns: None when ``value`` is neither, so that the caller can name the
        setting in its error message (saying that :data:`FLAG_CHOICES` are valid).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def read_secret_file(path: str | os.PathLike[str], *, setting: str) -> Secret:
    """Read a secret from a file that only its owner can read (mode 0600 or 0400).

    :param setting: the setting that named the file, for error messages.
    :raises ConfigurationError: the file is missing, empty, or readable by others.
    """
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
        value = file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigurationError(
            f"{setting}: cannot read secret file {str(file)!r}: {error.strerror}"
        ) from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"{setting}: secret file {str(file)!r} has mode {stat.S_IMODE(mode):04o}; "
            f"it must be readable by its owner only (chmod 600 {file})"
        )
    if not value:
        raise ConfigurationError(f"{setting}: secret file {str(file)!r} is empty")
    return Secret(value)


def _read_toml(path: Path) -> dict[str, Any]:
    # Imported here: most runs have no config file and skip the parser's import.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"invalid TOML in {path}: {error}") from None
    except OSError as error:
        raise ConfigurationError(f"cannot read config file {path}: {error.strerror}") from None


def _dotflow_table(path: Path) -> dict[str, Any] | None:
    """The dotflow table of a config file, or None when a pyproject.toml has none."""
    document = _read_toml(path)
    if path.name != PYPROJECT_NAME:
        tools = document.get("tool")
        if isinstance(tools, dict) and "dotflow" in tools:
            raise ConfigurationError(
                f"{path}: found [tool.dotflow], which only a pyproject.toml has; in this file "
                f"write its keys at the top level (provider = ..., [server] ...)"
            )
        return document
    tools = document.get("tool", {})
    if not isinstance(tools, dict):
        raise ConfigurationError(f"{path}: [tool] must be a table, not {tools!r}")
    table = tools.get("dotflow")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [tool.dotflow] must be a table")
    return table


def find_config(
    start: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path | None, dict[str, Any]]:
    """Locate and read the configuration: ``DOTFLOW_CONFIG``, else the nearest file.

    Walking up from ``start`` (the working directory), the first directory
    holding a ``dotflow.toml``, or a ``pyproject.toml`` with a ``[tool.dotflow]``
    table, wins; ``dotflow.toml`` wins inside one directory.

    :returns: the file and its dotflow table, or ``(None, {})`` when there is none.
    """
    environ = os.environ if environ is None else environ
    explicit = environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "no such file"
            raise ConfigurationError(
                f"{CONFIG_FILE_ENV}={explicit!r}: {problem}; expected a pyproject.toml "
                f"or a {STANDALONE_CONFIG_NAME} file"
            )
        return path, _dotflow_table(path) or {}
    directory = (start or Path.cwd()).resolve()
    for candidate_dir in (directory, *directory.parents):
        for name in (STANDALONE_CONFIG_NAME, PYPROJECT_NAME):
            path = candidate_dir / name
            if path.is_file():
                table = _dotflow_table(path)
                if table is not None:
                    return path, table
    return None, {}


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


@attrs.frozen
class Settings:
    """The configuration a provider receives in its ``configure`` hook.

    Precedence for every key: environment variable (when the provider names
    one and it is set to a non-empty value), then the config file, then the
    provider's default.
    """

    #: The ``[tool.dotflow]`` table (or the whole ``dotflow.toml``), read-only.
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze, repr=False)
    #: The file ``config`` came from, if any.
    config_path: Path | None = None
    #: A copy of the environment; hidden from ``repr`` because it holds secrets.
    environ: Mapping[str, str] = attrs.field(
        factory=lambda: dict(os.environ), converter=_freeze, repr=False
    )

    @classmethod
    def load(cls, start: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment and the nearest config file (see :func:`find_config`)."""
        environ = dict(os.environ if environ is None else environ)
        path, table = find_config(start, environ)
        return cls(config=table, config_path=path, environ=environ)

    def section(self, name: str) -> Mapping[str, Any]:
        """The ``[tool.dotflow.<name>]`` table, empty when absent."""
        value = self.config.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{self._where(name)} must be a table, not {value!r}")
        return value

    def lookup(
        self,
        key: str,
        *,
        env: str | None = None,
        section: str | None = None,
        default: Any = None,
    ) -> Any:
        """A setting: ``environ[env]`` if set and non-empty, else the config key, else default."""
        if env is not None:
            value = self.environ.get(env)
            if value:
                return value
        table = self.section(section) if section else self.config
        return table.get(key, default)

    def origin(self, key: str, *, env: str | None = None, section: str | None = None) -> str:
        """Where :meth:`lookup` takes ``key`` from, to name it in an error message.

        ``env`` when that variable is set; else ``<key> in [tool.dotflow.<section>]
        of <file>`` when the config file has it; else (the default) where a user
        would set it: ``env``, or the config key.
        """
        if env is not None and self.environ.get(env):
            return env
        table = self.section(section) if section else self.config
        if key in table:
            return self._where(section, key)
        return env or self._where(section, key, in_file=False)

    def secret(
        self, key: str, *, env: str | None = None, section: str | None = None
    ) -> Secret | None:
        """A secret from ``environ[env]``, or from the file named by the ``<key>_file`` setting.

        A secret written into the config file itself is refused: project files
        end up in version control, shared drives and CI logs.

        :raises ConfigurationError: the secret is in the config file, or its file is unsafe.
        """
        if env is not None and self.environ.get(env):
            return Secret(self.environ[env])
        table = self.section(section) if section else self.config
        if key in table:
            raise ConfigurationError(
                f"{self._where(section, key)}: secrets are not read from config files; "
                f"set {env or 'the environment variable'} or {key}_file (a file with mode 0600)"
            )
        file_key = f"{key}_file"
        if env is not None and self.environ.get(f"{env}_FILE"):
            return read_secret_file(self.environ[f"{env}_FILE"], setting=f"{env}_FILE")
        if table.get(file_key):
            return read_secret_file(table[file_key], setting=self._where(section, file_key))
        return None

    def _where(self, section: str | None, key: str | None = None, *, in_file: bool = True) -> str:
        """A key or table as the user writes it: ``<key> in [tool.dotflow.<section>] of <file>``.

        In a ``dotflow.toml`` (any file but a ``pyproject.toml``) the tables sit at
        the top level: ``<key> in [<section>] of <file>``, or ``<key> of <file>``.
        """
        standalone = self.config_path is not None and self.config_path.name != PYPROJECT_NAME
        if standalone:
            where = f"[{section}]" if section else ""
        else:
            where = f"[tool.dotflow{'.' + section if section else ''}]"
        if key:
            where = f"{key} in {where}" if where else key
        return f"{where} of {self.config_path}" if in_file and self.config_path else where
