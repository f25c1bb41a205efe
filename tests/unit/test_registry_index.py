"""The registry's table of kinds equals what the families declare, and a look-up imports only its own family."""

from __future__ import annotations

import subprocess
import sys

import pytest

from watchdogd.contracts import Family
from watchdogd.registry import DEFAULT, SHIPPED, FamilyIndex, Registry, shipped_families


def test_the_index_names_exactly_the_kinds_each_family_declares() -> None:
    for index, family in zip(SHIPPED, shipped_families(), strict=True):
        assert family.name == index.name
        assert sorted(family.probes) == sorted(index.probes), index.name
        assert sorted(family.actions) == sorted(index.actions), index.name
        assert sorted(family.targets) == sorted(index.targets), index.name


def test_the_lazy_default_serves_the_same_specs_as_an_eager_registry() -> None:
    eager = Registry.of(shipped_families())
    for lazy, full in ((DEFAULT.probes, eager.probes), (DEFAULT.actions, eager.actions),
                       (DEFAULT.targets, eager.targets)):
        assert sorted(lazy) == sorted(full)
        assert len(lazy) == len(full)
        assert dict(lazy.items()) == dict(full)


def test_an_unknown_kind_is_a_key_error_and_not_contained() -> None:
    assert "host.nope" not in DEFAULT.probes
    assert DEFAULT.probes.get("host.nope") is None
    with pytest.raises(KeyError):
        DEFAULT.probes["host.nope"]


def test_a_kind_declared_twice_is_refused() -> None:
    twice = (FamilyIndex("host", probes=("host.cpu",)), FamilyIndex("process", probes=("host.cpu",)))
    with pytest.raises(RuntimeError, match="host.cpu is declared twice"):
        Registry.lazy(twice)


def test_a_module_without_a_family_is_refused() -> None:
    broken = Registry.lazy((FamilyIndex("__init__", probes=("x.y",)),))
    with pytest.raises((RuntimeError, AttributeError, ModuleNotFoundError)):
        broken.probes["x.y"]


def test_looking_up_a_host_probe_imports_no_other_family() -> None:
    code = (
        "import sys\n"
        "from watchdogd.registry import DEFAULT\n"
        "assert 'host.cpu' in DEFAULT.probes and 'postgres.up' in DEFAULT.probes\n"
        "DEFAULT.probes['host.cpu']\n"
        "print(sorted(m for m in sys.modules if m.startswith('watchdogd.families.') and m.count('.') == 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "['watchdogd.families.host']"


def test_the_family_type_is_what_each_package_exports() -> None:
    assert all(isinstance(family, Family) for family in shipped_families())
