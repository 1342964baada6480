"""One registry mechanism for datasets, architectures and methods (timm's `_registry.py` in small).

    ARCHS = Registry("architecture", key="arch")

    @ARCHS.register("resnet18")
    def resnet18(num_classes, width, image_size, stem, in_channels): ...

    ARCHS["resnet18"]            # the builder; an unknown name raises ValueError with a suggestion
    sorted(ARCHS)                # the names

A Registry is a read-only mapping from name to entry (a function or a class), so `name in REG`,
`sorted(REG)` and `REG.items()` work as they do on a dict.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .catalogue import did_you_mean


class Registry(Mapping):
    def __init__(self, kind: str, key: str):
        self.kind = kind     # what an entry is, for messages: "dataset", "architecture", "method"
        self.key = key       # the config key that names an entry: "dataset", "arch", "method"
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable:
        """Decorator: register a function or class under `name`."""
        def deco(obj):
            self.add(name, obj)
            return obj
        return deco

    def add(self, name: str, obj) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def __getitem__(self, name: str):
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(self.unknown(name)) from None

    def unknown(self, name) -> str:
        """The error message for an unknown name: the bad value, the choices, and a close match."""
        hint = did_you_mean(name, self._entries)
        return (f"{self.key}={name!r}: unknown {self.kind}; choose one of {sorted(self._entries)}"
                + (f"; {hint}" if hint.startswith("did you mean") else ""))

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
