"""Reading and checking the provider's settings.

Every value comes through the core's one mechanism (the ``configure`` hook's
:class:`~dotflow_core.Settings`): environment variable, else the key in
``[tool.dotflow.server]``, else the default. Arguments given to
``ServerAPI(...)`` in code win over both. A bad value raises
:class:`~dotflow_core.ConfigurationError` naming the variable and what is valid.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from dotflow_core.plugin import (
    FLAG_CHOICES,
    HOME_ENV,
    ConfigurationError,
    Secret,
    Settings,
    parse_flag,
    user_dir,
    warn_once,
)

logger = logging.getLogger("dotflow.server.api")

#: The ``[tool.dotflow.<SECTION>]`` table holding this provider's keys.
SECTION: Final = "server"
BASE_URL_ENV: Final = "SERVER_BASE_URL"
TOKEN_ENV: Final = "SERVER_USER_TOKEN"
STRICT_ENV: Final = "SERVER_STRICT"
STRICT_DELIVERY_ENV: Final = "SERVER_STRICT_DELIVERY"
OUTBOX_DIR_ENV: Final = "DOTFLOW_OUTBOX_DIR"

#: Concurrent requests by default. A finishing workflow queues one create per task
#: at once, and the wire contract orders them between the workflow's create and its
#: final status; with this many in flight, a workflow of up to 32 tasks is reported
#: in three round trips. The server is not pressed when it struggles: after any
#: retryable failure, delivery sends one request at a time until it answers again.
DEFAULT_MAX_IN_FLIGHT: Final = 32
MAX_IN_FLIGHT_LIMIT: Final = 64
#: Visible ASCII only: a token with spaces or control characters would corrupt the header.
_TOKEN_PATTERN: Final = re.compile(r"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    """The provider's checked configuration (immutable; equal when every value is).

    The token is left out of ``repr``. ``outbox_dir`` defaults to
    ``<user dir>/outbox``.
    """

    #: Absolute http(s) URL, any version prefix included, without a trailing slash.
    base_url: str
    token: Secret = dataclasses.field(repr=False)
    strict: bool = False
    #: Strict delivery: a run that dropped events or left some undelivered exits
    #: with :data:`EXIT_UNDELIVERED`.
    strict_delivery: bool = False
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    flush_timeout: float = 5.0
    max_queue: int = 10_000
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ca_bundle: str | None = None
    outbox_dir: Path = dataclasses.field(default_factory=lambda: user_dir() / "outbox")

    @property
    def verify(self) -> str | bool:
        """The ``verify`` argument of requests: the CA bundle, else the system's trust store."""
        return self.ca_bundle or True

    @property
    def fingerprint(self) -> str:
        """An identity for the token that reveals nothing about it (names outbox folders)."""
        return token_fingerprint(self.token)


def token_fingerprint(token: Secret) -> str:
    """The first 16 hex digits of ``sha256(b"dotflow-outbox\\0" + token)``."""
    import hashlib

    return hashlib.sha256(b"dotflow-outbox\0" + token.reveal().encode("utf-8")).hexdigest()[:16]


#: (key in the config file, environment variable, default) of each plain setting.
_KEYS: Final[dict[str, tuple[str, Any]]] = {
    "base_url": (BASE_URL_ENV, None),
    "strict": (STRICT_ENV, False),
    "strict_delivery": (STRICT_DELIVERY_ENV, False),
    "connect_timeout": ("SERVER_CONNECT_TIMEOUT", 3.0),
    "read_timeout": ("SERVER_READ_TIMEOUT", 10.0),
    "flush_timeout": ("SERVER_FLUSH_TIMEOUT", 5.0),
    "max_queue": ("SERVER_MAX_QUEUE", 10_000),
    "max_in_flight": ("SERVER_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT),
    "ca_bundle": ("SERVER_CA_BUNDLE", None),
    "outbox_dir": (OUTBOX_DIR_ENV, None),
}


def load_settings(settings: Settings, overrides: Mapping[str, Any] | None = None) -> ApiSettings:
    """Build and check the configuration; ``overrides`` (constructor arguments) win.

    :raises ConfigurationError: a value is missing or invalid; the message names it.
    """
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    raw: dict[str, tuple[Any, str]] = {}
    for key, (env, default) in _KEYS.items():
        if key in overrides:
            raw[key] = (overrides[key], f"ServerAPI({key}=...)")
        else:
            raw[key] = (
                settings.lookup(key, env=env, section=SECTION, default=default),
                settings.origin(key, env=env, section=SECTION),
            )

    _warn_unknown_keys(settings)
    base_url = _base_url(*raw["base_url"], settings.origin("base_url", section=SECTION))
    token = _token(settings, overrides.get("token"))
    outbox_value, outbox_origin = raw["outbox_dir"]
    config = ApiSettings(
        base_url=base_url,
        token=token,
        strict=_boolean(*raw["strict"]),
        strict_delivery=_boolean(*raw["strict_delivery"]),
        connect_timeout=_seconds(*raw["connect_timeout"]),
        read_timeout=_seconds(*raw["read_timeout"]),
        flush_timeout=_seconds(*raw["flush_timeout"], allow_zero=True),
        max_queue=_integer(*raw["max_queue"], low=1, high=None),
        max_in_flight=_integer(*raw["max_in_flight"], low=1, high=MAX_IN_FLIGHT_LIMIT),
        ca_bundle=_ca_bundle(*raw["ca_bundle"]),
        outbox_dir=_directory(outbox_value, outbox_origin, settings),
    )
    _warn_if_cleartext(config.base_url)
    return config


def _warn_unknown_keys(settings: Settings) -> None:
    """A misspelt key in our section would otherwise be ignored without a word."""
    known = sorted({*_KEYS, "token", "token_file"})
    for key in settings.section(SECTION):
        if key in known:
            continue
        import difflib

        close = difflib.get_close_matches(key, known, n=1)
        _warn_once(
            ("unknown key", settings.config_path, key),
            "%s: unknown key, ignored%s; the 'api' provider reads %s",
            settings.origin(key, section=SECTION),
            f" (did you mean {close[0]!r}?)" if close else "",
            ", ".join(known),
        )


def _base_url(value: Any, origin: str, config_key: str) -> str:
    """:param config_key: where the config file would hold it, for the missing-value error."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigurationError(
            f"{BASE_URL_ENV} is not set; the 'api' provider needs the server's URL, "
            f"e.g. {BASE_URL_ENV}=https://dotflow.example.com/api/v1 (or {config_key})"
        )
    if not isinstance(value, str):
        raise ConfigurationError(f"{origin}={value!r}: expected a URL string")
    url = value.strip().rstrip("/")
    hint = "expected an absolute http(s) URL with a host, e.g. https://dotflow.example.com/api/v1"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigurationError(f"{origin}={value!r}: {hint}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError(f"{origin}={value!r}: {hint}")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{origin}: the URL must not contain credentials (user:password@); "
            f"put the token in {TOKEN_ENV} instead"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{origin}={value!r}: a query or fragment is not allowed; {hint}")
    problem = _unsendable(url, host)
    if problem:
        raise ConfigurationError(f"{origin}={value!r}: {problem}; {hint}")
    return url


#: Characters no URL may carry unencoded (RFC 3986): requests could not send it.
_UNSAFE_URL_CHARACTERS: Final = re.compile(r'[\x00-\x20\x7f<>"{}|\\^`]')
#: A host name (letters, digits, hyphens, dots), or an IPv4 address.
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?")


def _unsendable(url: str, host: str) -> str | None:
    """Why no request could be sent to ``url`` (None: it can), without importing requests."""
    bad = _UNSAFE_URL_CHARACTERS.search(url)
    if bad:
        return f"the URL holds {bad.group()!r}, which a URL cannot carry unencoded"
    if ":" in host:  # an IPv6 literal (urlsplit has removed the brackets)
        import ipaddress

        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return f"{host!r} is not a valid IPv6 address"
        return None
    if host.isascii():  # no need for the idna codec (importing it costs 1.6 ms a run)
        labels = host[:-1] if host.endswith(".") else host
        ascii_host = host if all(0 < len(label) <= 63 for label in labels.split(".")) else ""
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return f"{host!r} is not a valid host name"
    if not _HOST_NAME.fullmatch(ascii_host):
        return f"{host!r} is not a valid host name"
    return None


def _token(settings: Settings, explicit: Any) -> Secret:
    if explicit is not None:
        token = explicit if isinstance(explicit, Secret) else None
        if token is None and isinstance(explicit, str):
            token = Secret(explicit.strip())
        if token is None:
            raise ConfigurationError(
                f"ServerAPI(token=...): expected a str or dotflow_core.Secret, "
                f"not {type(explicit).__name__}"
            )
        origin = "ServerAPI(token=...)"
    else:
        token = settings.secret("token", env=TOKEN_ENV, section=SECTION)
        origin = TOKEN_ENV
        if token is not None:
            token = Secret(token.reveal().strip())
    if token is None or not token:
        raise ConfigurationError(
            f"{TOKEN_ENV} is not set or empty; the 'api' provider needs the user token "
            f"({TOKEN_ENV}, {TOKEN_ENV}_FILE, or {settings.origin('token_file', section=SECTION)} "
            f"naming a file with mode 0600)"
        )
    if not _TOKEN_PATTERN.fullmatch(token.reveal()):
        # Never echo the value: it is a secret, however malformed.
        raise ConfigurationError(
            f"{origin}: the token contains spaces, control or non-ASCII characters; "
            f"expected the token exactly as the server issued it"
        )
    return token


def _boolean(value: Any, origin: str) -> bool:
    flag = parse_flag(value)
    if flag is None:
        raise ConfigurationError(f"{origin}={value!r}: expected {FLAG_CHOICES}")
    return flag


def _seconds(value: Any, origin: str, *, allow_zero: bool = False) -> float:
    bound = ">= 0" if allow_zero else "> 0"
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{origin}={value!r}: expected a number of seconds {bound}"
        ) from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise ConfigurationError(f"{origin}={value!r}: expected a number of seconds {bound}")
    return number


def _integer(value: Any, origin: str, *, low: int, high: int | None) -> int:
    valid = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    try:
        if isinstance(value, (bool, float)):
            raise ValueError
        number = int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{origin}={value!r}: expected {valid}") from None
    if number < low or (high is not None and number > high):
        raise ConfigurationError(f"{origin}={value!r}: expected {valid}")
    return number


def _ca_bundle(value: Any, origin: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, (str, Path)):
        raise ConfigurationError(f"{origin}={value!r}: expected the path of a CA bundle file")
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigurationError(
            f"{origin}={str(value)!r}: no such file or directory; expected a PEM CA bundle"
        )
    return str(path)


def _directory(value: Any, origin: str, settings: Settings, *, writable: bool = True) -> Path:
    """The outbox directory, checked but not created (the outbox creates it when it spools).

    The default one (no outbox setting, no ``DOTFLOW_HOME``) that cannot be written,
    say in a container with a read-only home, only warns: the outbox is needed only
    if the server cannot be reached in time.

    :param writable: False to check only that it can be read (listing it).
    :raises ConfigurationError: a directory the user chose is not one, or cannot be
        created or written to.
    """
    chosen = True
    environ = settings.environ
    moved_by = f"{OUTBOX_DIR_ENV} or {settings.origin('outbox_dir', section=SECTION)} moves it"
    if value is None or (isinstance(value, str) and not value.strip()):
        path = user_dir(environ) / "outbox"
        chosen = bool(environ.get(HOME_ENV))
        if chosen:
            named = f"{HOME_ENV}={environ[HOME_ENV]!r} (the outbox is {path}; {moved_by})"
        else:
            named = f"the default outbox {str(path)!r} ({moved_by})"
    elif isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        named = f"{origin}={str(value)!r}"
    else:
        raise ConfigurationError(f"{origin}={value!r}: expected a directory path")
    problem = _unusable_directory(path, writable=writable)
    if problem is None:
        return path
    if chosen:
        raise ConfigurationError(
            f"{named}: {problem}; expected a directory this user can write to, "
            "or a path where one can be created"
        )
    _warn_once(
        ("outbox", path),
        "%s: %s; events still undelivered when a run ends will be lost, not kept "
        "(set %s to a writable directory)",
        named, problem, OUTBOX_DIR_ENV,
    )  # fmt: skip
    return path


def _unusable_directory(path: Path, *, writable: bool = True) -> str | None:
    """Why no outbox can live at ``path`` (None: it can), judged from its nearest existing part."""
    if "\0" in str(path):
        return "the path contains a NUL character"
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not os.path.isdir(existing):
        if existing == path:
            return f"{path} is not a directory"
        return f"{path} cannot be created: {existing} is not a directory"
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        if existing == path:
            return f"{path} is not writable"
        return f"{path} cannot be created: {existing} is not writable"
    return None


def outbox_root(settings: Settings) -> Path:
    """The outbox directory alone (``dotflow outbox`` lists it without a URL or token).

    :raises ConfigurationError: the path the settings give is not a directory.
    """
    value = settings.lookup("outbox_dir", env=OUTBOX_DIR_ENV, section=SECTION)
    origin = settings.origin("outbox_dir", env=OUTBOX_DIR_ENV, section=SECTION)
    return _directory(value, origin, settings, writable=False)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (a token sent there stays on the machine)."""
    host = host.strip("[]").lower()
    if host in ("localhost", "::1") or host.endswith(".localhost"):
        return True
    if host.startswith("127.") and host.replace(".", "").isdigit():
        return True  # 127.0.0.0/8, without importing ipaddress
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_once(about: Hashable, message: str, *args: object) -> None:
    """Log ``message`` as a WARNING the first time this process meets ``about``."""
    warn_once(logger, message, *args, key=about)


def _warn_if_cleartext(base_url: str) -> None:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return
    _warn_once(
        ("cleartext", base_url),
        "%s=%s uses plain http to a remote host: the token travels in clear text; use https",
        BASE_URL_ENV,
        base_url,
    )
