"""Named entries of one kind (backbones, heads, architectures, datasets, recipes, optimizers, protocols ...).

A registry is filled where its entries are defined: a module defines a class or a builder and registers it under the
name a config uses, and the package that holds these modules imports each of them. Adding a model family, a recipe, a
protocol or a dataset is therefore a new file and its registration, never a branch in shared code; the valid values
of a config key are the registry's names, so no list of choices is kept anywhere else.

    BACKBONES = Registry("backbone", "MODEL.backbone")

    @BACKBONES.register("resnet")
    def resnet(cfg, pretrained: str) -> nn.Module: ...

    BACKBONES.get(cfg.MODEL.backbone)      # a UserError naming MODEL.backbone and the choices when unknown

Entries added from outside the project (a test, a notebook) can be removed again with `remove(name)`. attack/ keeps
its own table (attack.registry.ATTACKS), since the attack library imports nothing of this project.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from util.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> entry. `kind` names what the entries are (for messages), `key` the config key that chooses one."""

    def __init__(self, kind: str, key: str = "") -> None:
        self.kind, self.key = kind, key
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Add `entry` under `name` (as a decorator when `entry` is not given). A name is registered once: adding it
        again is a ValueError, so that one module cannot silently replace another's entry."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name; got {name!r}")

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._entries[name] = value
            return value
        return add if entry is None else add(entry)

    def remove(self, name: str) -> T:
        """Take an entry out again (entries a test or a notebook added); returns it."""
        if name not in self._entries:
            raise KeyError(f"no {self.kind} {name!r} is registered")
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry `name`; a UserError naming the config key, the choices and the closest one when unknown."""
        if name not in self._entries:
            where = self.key or f"a {self.kind}"
            close = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{where} must be one of {', '.join(self.names())}; got {name!r}{hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
