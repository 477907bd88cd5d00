"""Reading service settings from environment variables, with errors that name the variable.

Each service has one frozen `Settings` dataclass whose `from_env()` reads its variables through an `Env` with
the service's prefix (e.g. `Env("CLASSIFIER_").port("PORT", 50051)` reads CLASSIFIER_PORT).
A bad or missing value raises `ConfigError` before anything binds a port.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable is missing or has a value the service cannot use."""


@dataclass(frozen=True)
class Address:
    """A `host:port` peer address (IPv6 hosts in brackets: `[::1]:50051`)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_addr(value: str) -> Address:
    """Parse `host:port`; raises ValueError with the reason."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [ipv6]:port, got {value!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, got {value!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 host needs brackets, e.g. [::1]:50051, got {value!r}")
    if not host:
        raise ValueError(f"the host is empty in {value!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 1 to 65535, got {port_text!r}")
    return Address(host, int(port_text))


class Env:
    """Typed access to the environment variables that start with `prefix`."""

    def __init__(self, prefix: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(self.prefix + name)
        return None if value is None or value.strip() == "" else value.strip()

    def _fail(self, name: str, value: object, reason: str) -> ConfigError:
        return ConfigError(f"{self.prefix}{name}={value!r}: {reason}")

    def get_str(self, name: str, default: str | None = None) -> str:
        value = self._raw(name)
        if value is not None:
            return value
        if default is None:
            raise ConfigError(f"{self.prefix}{name} is required but not set")
        return default

    def get_int(self, name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self._fail(name, raw, "not an integer") from None
        self._check_bounds(name, raw, value, min, max)
        return value

    def get_float(self, name: str, default: float, *, min: float | None = None, max: float | None = None) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self._fail(name, raw, "not a number") from None
        if not math.isfinite(value):
            raise self._fail(name, raw, "must be a finite number")
        self._check_bounds(name, raw, value, min, max)
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise self._fail(name, raw, "expected true/false (or 1/0, yes/no, on/off)")

    def port(self, name: str, default: int) -> int:
        """A TCP port to listen on; 0 lets the OS choose a free one."""
        return self.get_int(name, default, min=0, max=65535)

    def addr(self, name: str, default: str | None = None) -> Address:
        raw = self._raw(name)
        if raw is None:
            if default is None:
                raise ConfigError(f"{self.prefix}{name} is required but not set (expected host:port)")
            raw = default
        try:
            return parse_addr(raw)
        except ValueError as bad:
            raise self._fail(name, raw, str(bad)) from None

    def path(self, name: str, default: str | os.PathLike[str], *, must_exist: str | None = None) -> Path:
        """A filesystem path; `must_exist` is None, "dir" or "file"."""
        path = Path(self._raw(name) or default).expanduser()
        if must_exist == "dir" and not path.is_dir():
            raise self._fail(name, str(path), "is not an existing directory")
        if must_exist == "file" and not path.is_file():
            raise self._fail(name, str(path), "is not an existing file")
        return path

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get_str(name, default)
        if value not in choices:
            raise self._fail(name, value, f"must be one of {', '.join(choices)}")
        return value

    def _check_bounds(self, name: str, raw: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise self._fail(name, raw, f"must be at least {low}")
        if high is not None and value > high:
            raise self._fail(name, raw, f"must be at most {high}")
