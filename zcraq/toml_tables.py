"""The machinery of strict TOML config files: reading one, and typed access to its tables.

Every problem raises ``ConfigError``, whose message names the file and the dotted key, e.g.
``config/node1.toml: node.service_port: expected an integer from 1 to 65535, got "abc"``. Unknown
tables and keys are errors (with a "did you mean" hint when one is close), so a typo never silently
falls back to a default. Relative paths resolve against the directory that holds the file.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from zcraq.endpoints import show


class ConfigError(Exception):
    """A config file that cannot be used. ``key`` is dotted (``node.service_port``) or None."""

    def __init__(self, path: str | os.PathLike[str], key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


def suggest(name: str, choices: Iterable[str], fmt: str = '"{}"') -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(close[0])}?)" if close else ""


MISSING: Any = object()


class Table:
    """Typed, one-key-at-a-time access to one TOML table, raising ConfigError on misuse."""

    def __init__(self, path: str, name: str, data: Any, known: Iterable[str]) -> None:
        self.path = path
        self.name = name
        if not isinstance(data, Mapping):
            raise ConfigError(path, name, f"expected a table [{name}], got {show(data)}")
        self.data = data
        known = tuple(known)
        for key in data:
            if key not in known:
                raise ConfigError(path, f"{name}.{key}", f"unknown key{suggest(key, known)}")

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"{self.name}.{key}", problem)

    def _get(self, key: str, default: Any, check: Callable[[Any], bool], expected: str) -> Any:
        value = self.data.get(key, MISSING)
        if value is MISSING:
            if default is MISSING:
                raise self.error(key, "missing required key")
            return default
        if not check(value):
            raise self.error(key, f"expected {expected}, got {show(value)}")
        return value

    def get_int(self, key: str, lo: int, hi: int, default: Any = MISSING) -> int:
        def ok(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

        return self._get(key, default, ok, f"an integer from {lo} to {hi}")

    def get_str(self, key: str, default: Any = MISSING) -> str:
        value = self._get(key, default, lambda v: isinstance(v, str), "a string")
        if not value:
            raise self.error(key, "must not be empty")
        return value

    def get_bool(self, key: str, default: Any = MISSING) -> bool:
        return self._get(key, default, lambda v: isinstance(v, bool), "true or false")

    def get_choice(self, key: str, choices: tuple[str, ...], default: Any = MISSING) -> str:
        expected = "one of " + ", ".join(show(c) for c in choices)
        return self._get(key, default, lambda v: isinstance(v, str) and v in choices, expected)

    def get_path(self, key: str, base: Path) -> Path:
        value = Path(self.get_str(key))
        return value if value.is_absolute() else Path(os.path.normpath(base / value))


def check_top_level(path: str, data: Any, main: str, other_kind: str,
                    optional: tuple[str, ...] = ("limits",)) -> None:
    """The document has table ``[main]`` and maybe the ``optional`` ones, nothing else."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, None, "expected a TOML document")
    allowed = (main, *optional)
    for key, value in data.items():
        if key in allowed:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(path, key, f"unknown key outside any table (keys belong under [{main}])")
        if key == other_kind:
            hint = f" (this looks like a {other_kind} config; a {main} config needs [{main}])"
        else:
            hint = suggest(key, allowed, "[{}]")
        raise ConfigError(path, key, f"unknown table [{key}]{hint}")
    if main not in data:
        raise ConfigError(path, main, f"missing required table [{main}]")


def base_dir(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path)).parent


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "invalid TOML: file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"invalid TOML: {exc}") from None
