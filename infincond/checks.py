"""Checks of settings where they enter: numbers finite and in range, whole numbers whole, choices known.
Each raises a :class:`ConfigError` that names the setting and the values it accepts."""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real

from .errors import ConfigError


def check_number(name: str, value: object, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float when it is a finite real number in the range, else a clear ConfigError."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    span = f" in {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
    span = "" if low is None and high is None else span
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number{span}, not {value!r}.")
    number = float(value)
    if low is not None and (number < low or (low_open and number == low)):
        raise ConfigError(f"{name} must be a number{span}, not {value!r}.")
    if high is not None and (number > high or (high_open and number == high)):
        raise ConfigError(f"{name} must be a number{span}, not {value!r}.")
    return number


def check_integer(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int when it is a whole number in [minimum, maximum], else a clear ConfigError."""
    whole = isinstance(value, Integral) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise ConfigError(f"{name} must be a whole number, not {value!r}.")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name} must be {bounds}, not {number}.")
    return number


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """``value`` when it is one of ``choices``, else a clear ConfigError listing them."""
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}, not {value!r}.")
    return value


def check_label_weight(value: object, name: str = "label_weight (alpha)") -> float:
    """The label blend alpha: the share of the one-hot label in what the student fits, in [0, 1]."""
    return check_number(name, value, 0.0, 1.0)


def check_factor(value: object, name: str = "The tuning factor") -> float:
    """An up- or down-tune's factor: a finite number greater than 1 (up-tune multiplies a concept's influence
    by it, down-tune divides it)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)) or value <= 0:
        raise ConfigError(f"{name} must be a finite number, greater than 1 (a positive factor), not {value!r}.")
    if value <= 1:
        raise ConfigError(f"{name} must be greater than 1, not {float(value):g}: up-tune multiplies the concept's "
                          "influence by it and down-tune divides it.")
    return float(value)
