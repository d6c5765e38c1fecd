"""Turning the raw values of a config (YAML, JSON, CLI flags, a Ray trial dict) into typed fields.

Shared by :class:`metaadv.config.TrainConfig` and :class:`metaadv.meta.MetaConfig`, so both read a
file the same way and refuse the same things with a message a user can act on: a config that is
not a mapping, a key that is not a name, a boolean that is neither true nor false, a number that
is not finite, a string where a number belongs and the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .errors import UserError

__all__ = ["check_finite", "coerce", "config_keys"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def config_keys(values) -> dict:
    """``values`` as a dict with dashes turned into underscores; anything but a mapping of names is refused."""
    if not isinstance(values, Mapping):
        raise UserError(f"a config must be a mapping of keys to values (key: value), got a {type(values).__name__}")
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise UserError(f"config keys must be names such as eps or lr, got {bad[0]!r} ({type(bad[0]).__name__})")
    return {k.replace("-", "_"): v for k, v in values.items()}


def coerce(key: str, default, value):
    """``value`` converted to the type of the field's ``default``; a :class:`UserError` if it is not one."""
    kind = _kind(default)
    try:
        if isinstance(default, bool):
            return _bool(value)
        if isinstance(value, bool):
            raise ValueError  # true is not a number of steps, nor a name
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, (list, tuple, dict)):
                raise ValueError
            return _finite(float(value))
        if isinstance(default, tuple):
            if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
                raise ValueError
            values = tuple(value)
            if any(isinstance(v, bool) for v in values):
                raise ValueError
            return tuple(_finite(float(v)) for v in values)
        if isinstance(default, str):
            if value is None:
                return ""
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"config key {key} expects {kind}, got {value!r}") from None
    return value


def check_finite(config) -> None:
    """Refuse NaN and infinity in any float (or tuple of floats) field of a config dataclass."""
    import dataclasses

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UserError(f"{f.name} must be a finite number, got {value}")


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError
    return x


def _kind(default) -> str:
    if isinstance(default, bool):
        return "a boolean (true or false)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a finite number"
    if isinstance(default, tuple):
        return "a list of finite numbers"
    if isinstance(default, str):
        return "a string"
    return type(default).__name__
