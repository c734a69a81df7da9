"""The layered mappings and sets a zone's index becomes after updates: each version reads as the plain dict or set
it stands for, the versions before it stay as they were, and layers fold into a fresh base once large."""

from __future__ import annotations

import random

from sockhop.dns.layered import GONE, MIN_LAYER, LayeredDict, LayeredSet, changed, set_changed


def test_a_chain_of_changed_dicts_reads_as_plain_dicts_and_old_versions_keep():
    rng = random.Random(17)
    model = {i: f"v{i}" for i in range(500)}
    mapping = dict(model)
    versions = [(mapping, dict(model))]
    layered = folded = 0
    for step in range(600):
        changes = {}
        for _ in range(rng.randint(1, 4)):
            key = rng.randrange(700)
            changes[key] = GONE if rng.random() < 0.4 else f"s{step}"
        mapping = changed(mapping, changes)
        for key, value in changes.items():
            if value is GONE:
                model.pop(key, None)
            else:
                model[key] = value
        layered += isinstance(mapping, LayeredDict)
        folded += type(mapping) is dict
        versions.append((mapping, dict(model)))
    assert layered and folded  # both kinds met: layers, and layers folded into a fresh base
    for version, expected in versions[:: len(versions) // 40]:
        assert dict(version.items()) == expected
        assert len(version) == len(expected)
        assert set(version) == set(expected)
        for key in range(700):
            assert (key in version) == (key in expected)
            assert version.get(key) == expected.get(key)


def test_a_deleted_key_is_missing_from_a_layer():
    mapping = changed({"a": 1, "b": 2}, {"a": GONE, "c": 3})
    assert isinstance(mapping, LayeredDict)
    assert "a" not in mapping and mapping.get("a", "none") == "none" and mapping["c"] == 3
    try:
        mapping["a"]
    except KeyError:
        pass
    else:
        raise AssertionError("a deleted key was found")
    again = changed(mapping, {"c": GONE})  # added in the layer, then deleted: gone from the layer too
    assert dict(again.items()) == {"b": 2} and "c" not in again.layer  # type: ignore[attr-defined]


def test_changed_sets_read_as_plain_sets_and_old_versions_keep():
    rng = random.Random(4)
    model = set(range(300))
    members = frozenset(model)
    versions = [(members, set(model))]
    kinds = set()
    for _ in range(400):
        add = {rng.randrange(400) for _ in range(rng.randint(0, 3))}
        remove = {rng.randrange(400) for _ in range(rng.randint(0, 2))}
        members = set_changed(members, add, remove)
        model = (model | add) - remove
        kinds.add(type(members))
        versions.append((members, set(model)))
    assert LayeredSet in kinds and set in kinds
    layered = next(version for version, _ in versions if isinstance(version, LayeredSet))
    expected = set(layered)
    assert layered | {999} == expected | {999} and layered - {1, 2} == expected - {1, 2}  # set operators: plain sets
    for version, expected in versions:
        assert set(version) == expected and len(version) == len(expected)
        for key in range(400):
            assert (key in version) == (key in expected)


def test_a_layer_folds_past_its_share_of_the_base():
    mapping: object = {i: i for i in range(10)}
    for i in range(MIN_LAYER):
        mapping = changed(mapping, {100 + i: i})  # type: ignore[arg-type]
    assert isinstance(mapping, LayeredDict)
    mapping = changed(mapping, {1000: 0})
    assert type(mapping) is dict and len(mapping) == 10 + MIN_LAYER + 1
