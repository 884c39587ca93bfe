"""The Settings form of the operator's page (MikoPBX's "Anti brute force" screen).

``page_values`` fills the form from the settings; ``check_form`` checks what the browser
sent with fastban.config's own rules and makes the new settings file text, changing only
the page's keys and keeping every comment and other line as it was
(``fastban.web.files.write_atomically`` puts it in place).  Pure: the caller reads and writes
the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import tomlkit
from tomlkit.exceptions import TOMLKitError

from fastban.config import VALIDATORS, ConfigError, settings_from_values, validate

PAGE_FIELDS = ("maxretry", "findtime", "bantime", "whitelist")
FORM = "_form"  # the key of errors that belong to no single field


def _network_text(network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _whitelist_text(networks) -> str:
    return " ".join(_network_text(n) for n in networks)


def page_values(settings) -> dict[str, str]:
    """The page's fields as the form shows them: numbers as text, the whitelist
    space-separated (a /32 or /128 host shown as the bare address)."""
    values = {name: str(getattr(settings, name)) for name in PAGE_FIELDS if name != "whitelist"}
    values["whitelist"] = _whitelist_text(settings.whitelist)
    return values


@dataclass(frozen=True)
class FormResult:
    text: str | None                               # the new file text; None when there are errors
    errors: dict[str, str] = field(default_factory=dict)  # field (or "_form") -> message
    values: dict = field(default_factory=dict)     # the page's checked values, on success


def _message(name: str, error: ConfigError) -> str:
    """The message of ``error`` without its "name: " prefix when it is about ``name``."""
    return str(error).removeprefix(f"{name}: ")


def _add(errors: dict, key: str, message: str) -> None:
    errors[key] = f"{errors[key]}; {message}" if key in errors else message


def _unchanged(name: str, value, file_values: dict) -> bool:
    if name not in file_values:
        return False
    try:
        return VALIDATORS[name](name, file_values[name]) == value
    except ConfigError:
        return False  # the form replaces a bad value of the file


def check_form(submitted: dict, current_text: str) -> FormResult:
    """Check the submitted fields and make the new settings file text from ``current_text``."""
    errors: dict[str, str] = {}
    unknown = [name for name in submitted if name not in PAGE_FIELDS]
    if unknown:
        errors[FORM] = "unknown field " + ", ".join(f'"{name}"' for name in unknown)
    checked = {}
    for name in PAGE_FIELDS:
        if name in submitted:
            try:
                checked[name] = VALIDATORS[name](name, submitted[name])
            except ConfigError as e:
                errors[name] = _message(name, e)

    try:
        file_values = tomllib.loads(current_text)
        document = tomlkit.parse(current_text)
    except (tomllib.TOMLDecodeError, TOMLKitError) as e:
        _add(errors, FORM, f"the settings file is not valid TOML ({e})")
        return FormResult(None, errors)

    changed = {name: value for name, value in checked.items()
               if not _unchanged(name, value, file_values)}
    for name, value in changed.items():
        # Assigning to an existing key keeps its line's indent and inline comment.
        document[name] = _whitelist_text(value) if name == "whitelist" else value
    text = document.as_string() if changed else current_text

    # The new file must load as the guard loads it.
    new_values = tomllib.loads(text)
    try:
        validate(new_values)
    except ConfigError as e:
        _add(errors, FORM, f"the settings file: {e}")
        return FormResult(None, errors)
    try:
        settings = settings_from_values(new_values)
    except ConfigError as e:  # a rule between settings
        _add(errors, "bantime" if "bantime" in changed else FORM, str(e))
        return FormResult(None, errors)
    if errors:
        return FormResult(None, errors)
    return FormResult(text, {}, {name: getattr(settings, name) for name in PAGE_FIELDS})
