"""``--config FILE``: the server's options in TOML, one key per long option.

    export = ["/srv/data"]            # like --export, repeatable options take lists
    port = 2049
    transducer = ["*.wav=wav-fields", "*.log=sh -c 'grep -c ERROR | sed s/^/errors=/'"]
    transducer-timeout = 2.0

Keys are the long options without their dashes (``state-dir`` or ``state_dir``); a ``no-X``
flag is written ``X = false``.  Options given on the command line win; repeatable ones add
to the file's list.
"""
from __future__ import annotations

import argparse
import tomllib
from typing import Any

from .errors import ConfigError


class ConfigFileError(ConfigError):
    pass


def defaults_from_file(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The file's settings as argparse defaults (checked against the parser's options)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config", "version")}
    # The file is the server's: a command that shares it skips what it does not use.
    others: frozenset[str] = getattr(parser, "other_settings", frozenset())
    out: dict[str, Any] = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None and dest in others:
            continue
        if action is None:
            raise ConfigFileError(f"{path}: unknown setting {key!r}")
        if isinstance(action, argparse._AppendAction):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigFileError(f"{path}: {key} must be a string or a list of strings")
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise ConfigFileError(f"{path}: {key} must be true or false")
        elif isinstance(action, argparse._CountAction):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigFileError(f"{path}: {key} must be a number")
        else:
            if isinstance(value, (list, dict)):
                raise ConfigFileError(f"{path}: {key} must be a single value")
            value = str(value) if action.type is None else value
            convert = action.type  # argparse allows a registered name too; ours are callables
            if callable(convert):
                try:
                    value = convert(value)
                except argparse.ArgumentTypeError as exc:
                    raise ConfigFileError(f"{path}: {key}: {exc}") from None
                except (TypeError, ValueError):
                    raise ConfigFileError(f"{path}: {key}: bad value {value!r}") from None
            if action.choices is not None and value not in action.choices:
                raise ConfigFileError(f"{path}: {key} must be one of {', '.join(map(str, action.choices))}")
        out[dest] = value
    return out


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the settings of its ``--config FILE`` (if any) as defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            parser.set_defaults(**defaults_from_file(parser, known.config))
        except ConfigFileError as exc:
            parser.error(str(exc))
    return parser.parse_args(argv)
