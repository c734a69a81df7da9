"""Immutable mappings and sets that change cheaply: a shared base and the few changes made since.

A zone changes by being replaced (the served version is never touched; readers on other threads, an AXFR being
encoded, keep theirs), but copying a 100,000-name index to change one name made every dynamic update cost the
zone's size. A new version here is the old one's base, shared, under a small layer of changes; the layer is folded
into a fresh base once it grows past a fraction of it, so an update costs what it changes plus, amortized, a few
entries' copying -- and a lookup one dict probe more (zones read from files stay plain dicts and sets).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Set
from typing import Any

#: an entry the layer deletes
GONE: Any = object()
_BASE: Any = object()
MIN_LAYER = 64  # changes a layer holds before it is folded, whatever the base's size
LAYER_SHARE = 32  # ... or 1/LAYER_SHARE of the base, if more


def _fold_at(base_size: int) -> int:
    return max(MIN_LAYER, base_size // LAYER_SHARE)


class LayeredDict(Mapping):
    """A read-only mapping: ``base`` under ``layer`` (its values, or :data:`GONE` for a deleted key)."""

    __slots__ = ("base", "layer", "size")

    def __init__(self, base: Mapping, layer: dict, size: int) -> None:
        self.base = base
        self.layer = layer
        self.size = size

    def get(self, key: Hashable, default: Any = None) -> Any:
        value = self.layer.get(key, _BASE)
        if value is _BASE:
            return self.base.get(key, default)
        return default if value is GONE else value

    def __getitem__(self, key: Hashable) -> Any:
        value = self.layer.get(key, _BASE)
        if value is _BASE:
            return self.base[key]
        if value is GONE:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        value = self.layer.get(key, _BASE)
        return key in self.base if value is _BASE else value is not GONE

    def __iter__(self) -> Iterator:
        layer = self.layer
        for key in self.base:
            if key not in layer:
                yield key
        for key, value in layer.items():
            if value is not GONE:
                yield key

    def __len__(self) -> int:
        return self.size


def changed(mapping: Mapping, changes: dict) -> Mapping:
    """``mapping`` with ``changes`` (key: new value, or :data:`GONE`) made; ``mapping`` itself stays as it was."""
    if isinstance(mapping, LayeredDict):
        base, layer = mapping.base, dict(mapping.layer)
    else:
        base, layer = mapping, {}
    size = len(mapping)
    for key, value in changes.items():
        size += (value is not GONE) - (key in mapping)
        if value is GONE and key not in base:
            layer.pop(key, None)
        else:
            layer[key] = value
    if len(layer) <= _fold_at(len(base)):
        return LayeredDict(base, layer, size)
    folded = dict(base)
    for key, value in layer.items():
        if value is GONE:
            del folded[key]
        else:
            folded[key] = value
    return folded


class LayeredSet(Set):
    """A read-only set: ``base`` with ``added`` and without ``removed`` (``added`` and ``removed`` disjoint)."""

    __slots__ = ("base", "added", "removed", "size")

    def __init__(self, base: Set, added: frozenset, removed: frozenset, size: int) -> None:
        self.base, self.added, self.removed, self.size = base, added, removed, size

    @classmethod
    def _from_iterable(cls, iterable) -> set:  # type: ignore[override]
        """What ``|``, ``&`` and ``-`` make: a plain set, as they would of a set."""
        return set(iterable)

    def __contains__(self, key: object) -> bool:  # an empty layer is not asked: hashing a dns.name is not cheap
        if key in self.base:
            return not self.removed or key not in self.removed
        return bool(self.added) and key in self.added

    def __iter__(self) -> Iterator:
        removed = self.removed
        for key in self.base:
            if key not in removed:
                yield key
        yield from self.added

    def __len__(self) -> int:
        return self.size


def set_changed(members: Set, add: Set = frozenset(), remove: Set = frozenset()) -> Set:
    """``members`` with ``add`` in it and ``remove`` out of it (``remove`` wins); ``members`` stays as it was."""
    add = frozenset(key for key in add if key not in members and not (remove and key in remove))
    remove = frozenset(key for key in remove if key in members)
    if not add and not remove:
        return members
    if isinstance(members, LayeredSet):
        base = members.base
        added = (members.added - remove) | (add - base)
        removed = (members.removed - add) | (remove & base)
    else:
        base, added, removed = members, add, remove
    size = len(members) + len(add) - len(remove)
    if len(added) + len(removed) <= _fold_at(len(base)):
        return LayeredSet(base, added, removed, size)
    return (set(base) - removed) | added
