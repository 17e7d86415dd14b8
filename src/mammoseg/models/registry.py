"""Name → constructor tables for encoders and decoders.

A new encoder or decoder is one decorated class; `build_model` never needs editing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: encoder name -> callable(in_channels: int) -> encoder module
ENCODERS: dict[str, Callable] = {}
#: decoder name -> callable(encoder_channels, dropout=...) -> decoder module
DECODERS: dict[str, Callable] = {}


def _register(table: dict[str, Callable], kind: str, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = obj  # type: ignore[assignment]
        return obj

    return decorator


def register_encoder(name: str) -> Callable[[T], T]:
    """Class decorator: make an encoder available to `build_model` under `name`."""
    return _register(ENCODERS, "encoder", name)


def register_decoder(name: str) -> Callable[[T], T]:
    """Class decorator: make a decoder available to `build_model` under `name`."""
    return _register(DECODERS, "decoder", name)


def lookup(table: dict[str, Callable], kind: str, name: str) -> Callable:
    """The constructor registered as `name`, or a ValueError listing the known names."""
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise ValueError(f"unknown {kind} {name!r}; known: {known}") from None
