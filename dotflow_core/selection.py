"""Which providers are active, and why.

First rule that applies wins:

1. ``flag``: an explicit choice (``dotflow start --provider``, ``DotFlow(providers=...)``);
2. ``env``: ``DOTFLOW_PROVIDER``;
3. ``config``: ``provider`` in ``[tool.dotflow]`` / ``dotflow.toml``;
4. ``auto``: an installed provider whose declaration in the
   ``dotflow.server.auto`` entry-point group is met by the environment (managed
   mode: the ``api`` provider declares ``SERVER_BASE_URL`` with
   ``SERVER_USER_TOKEN`` or ``SERVER_USER_TOKEN_FILE``); see :class:`AutoRule`;
5. ``default``: the ``default`` provider, when installed;
6. ``none``: no provider; every hook is a no-op.

A selection is a comma-separated list of names (events fan out to all of
them); the word ``none`` selects no provider at all.

The core names no provider here: what the ``auto`` rule looks for comes from
the providers' own package metadata, read without importing them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence

import attrs

from dotflow_core.discovery import AutoRule, auto_rules
from dotflow_core.errors import ConfigurationError
from dotflow_core.messages import warn_once
from dotflow_core.settings import Settings

logger = logging.getLogger("dotflow.providers")

PROVIDER_ENV = "DOTFLOW_PROVIDER"
DEFAULT_PROVIDER = "default"
NO_PROVIDER = "none"


@attrs.frozen
class Selection:
    """The providers to activate and the rule that chose them."""

    names: tuple[str, ...]
    #: One of ``flag``, ``env``, ``config``, ``auto``, ``default``, ``none``.
    source: str
    #: Something the user should be told once (e.g. managed mode is set up but not installed).
    notice: str | None = None

    def describe(self) -> str:
        """``api (auto)``, ``none (none)``...: names and source in a few words."""
        return f"{','.join(self.names) or NO_PROVIDER} ({self.source})"


def parse_names(value: str | Sequence[str], origin: str) -> tuple[str, ...]:
    """Split ``"api,default"`` (or a list) into names; ``none`` means no provider.

    :raises ConfigurationError: an empty name, or ``none`` mixed with others.
    """
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, (list, tuple)) and value:
        items = list(value)
    else:  # an empty list, a number, a boolean or a table from a config file
        items = [None]
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigurationError(
                f"{origin}: {shown_value(value)} is not a provider list; "
                f"use comma-separated names such as 'api,default', or 'none'"
            )
        name = item.strip()
        if name not in names:
            names.append(name)
    if NO_PROVIDER in names:
        if len(names) > 1:
            raise ConfigurationError(f"{origin}: 'none' cannot be combined with other providers")
        return ()
    return tuple(names)


def shown_value(value: object) -> str:
    """A setting's value as its user wrote it (TOML words, not Python reprs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return repr(list(value))
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def select_providers(
    settings: Settings,
    installed: Collection[str],
    flag: str | None = None,
    *,
    auto: Iterable[AutoRule] | None = None,
) -> Selection:
    """Apply the selection rules (module docstring) to a flag, settings and what is installed.

    :param auto: the installed providers' auto-selection rules (default: read from
        the package metadata, see :func:`dotflow_core.discovery.auto_rules`).
    """
    if flag is not None:
        return Selection(parse_names(flag, "--provider"), "flag")
    from_env = settings.environ.get(PROVIDER_ENV, "").strip()
    if from_env:
        return Selection(parse_names(from_env, PROVIDER_ENV), "env")
    from_config = settings.config.get("provider")
    if from_config is not None:
        return Selection(parse_names(from_config, settings.origin("provider")), "config")
    _warn_misspelt_provider_key(settings)
    if auto is None:
        auto = auto_rules()
    rules = [rule for rule in auto if rule.provider in installed]
    chosen = sorted({rule.provider for rule in rules if rule.met(settings.environ)})
    if chosen:
        return Selection(tuple(chosen), "auto")
    notice = half_configured(rules, settings.environ)
    if notice is not None:
        warn_once(logger, notice)
    if DEFAULT_PROVIDER in installed:
        return Selection((DEFAULT_PROVIDER,), "default", notice)
    return Selection((), NO_PROVIDER, notice)


def _warn_misspelt_provider_key(settings: Settings) -> None:
    """A top-level config key that looks like ``provider`` would otherwise be ignored silently."""
    keys = [key for key, value in settings.config.items() if not isinstance(value, Mapping)]
    if not keys:
        return
    import difflib

    for key in keys:
        if difflib.get_close_matches(key.lower(), ("provider", "providers"), n=1, cutoff=0.75):
            logger.warning(
                "%s: unknown key, ignored; did you mean 'provider'?", settings.origin(key)
            )


def auto_reason(rules: Iterable[AutoRule], selection: Selection, environ: Mapping[str, str]) -> str:
    """Why the ``auto`` rule chose ``selection``, in words (for ``dotflow providers``)."""
    met = [rule for rule in rules if rule.provider in selection.names and rule.met(environ)]
    parts = [
        f"{' and '.join(rule.variables)} set ({rule.provider!r} asks for them)" for rule in met
    ]
    return "; ".join(parts) or "chosen automatically"


def half_configured(rules: Iterable[AutoRule], environ: Mapping[str, str]) -> str | None:
    """What is missing for a provider whose auto-selection is only partly set up, or None.

    E.g. ``SERVER_BASE_URL`` without a usable token: the run would otherwise report to
    nobody without a word.
    """
    by_provider: dict[str, list[AutoRule]] = {}
    for rule in rules:
        if rule.partly_met(environ):
            by_provider.setdefault(rule.provider, []).append(rule)
    if not by_provider:
        return None
    lines = []
    for provider, partial in sorted(by_provider.items()):
        missing = {name for rule in partial for name in rule.missing(environ)}
        given = sorted({name for rule in partial for name in rule.variables} - missing)
        needed = " or ".join(dict.fromkeys(" and ".join(rule.missing(environ)) for rule in partial))
        lines.append(
            f"{' and '.join(given)} set but not {needed}: the {provider!r} provider is not "
            f"selected and nothing is reported to it; set {needed}, or choose providers with "
            f"--provider or {PROVIDER_ENV}"
        )
    return "; ".join(lines)
