"""The two forms of a config model (watchdogd.spec): checked through pydantic, held without it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from typing import Annotated, Any

import pytest
from pydantic import ValidationError

from watchdogd.spec import (
    BeforeValidator,
    ConfigDict,
    Field,
    Model,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_default,
    model_validator,
)

Doubled = Annotated[int, BeforeValidator(lambda value: int(value) * 2)]


class Inner(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(default=1, ge=1)


class Outer(Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    for_: float = Field(default=0.0, alias="for")
    doubled: Doubled = 0
    inner: Inner = model_default(Inner, size=3)
    items: tuple[Inner, ...] = ()
    password: SecretStr | None = None
    dsn: str = Field(default="", repr=False)
    _upper: str = PrivateAttr(default="")

    @field_validator("name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("name has a space")
        return value

    @model_validator(mode="after")
    def _derive(self) -> Outer:
        self._upper = self.name.upper()
        return self


def test_checking_returns_the_plain_form_with_every_value_converted() -> None:
    outer = Outer.model_validate({"name": "a", "for": "2", "doubled": "4", "items": [{"size": 5}], "password": "pw"})
    assert type(outer) is Outer and type(outer.inner) is Inner and type(outer.items[0]) is Inner
    assert (outer.for_, outer.doubled, outer.inner.size, outer.items[0].size) == (2.0, 8, 3, 5)
    assert isinstance(outer.password, SecretStr) and outer.password.get_secret_value() == "pw"
    assert outer._upper == "A"  # a validator's private attribute travels with the plain form


def test_every_problem_is_pydantics_with_its_location() -> None:
    with pytest.raises(ValidationError) as caught:
        Outer(name="a b", doubled="x", inner={"size": 0}, extra=1)
    where = {tuple(err["loc"]) for err in caught.value.errors()}
    assert where == {("name",), ("doubled",), ("inner", "size"), ("extra",)}


def test_the_plain_form_is_frozen_compared_hashed_and_pickled_by_value() -> None:
    one, two = Outer(name="a", dsn="postgresql://u:s3cret@h/db"), Outer(name="a", dsn="postgresql://u:s3cret@h/db")
    assert one == two and hash(one) == hash(two) and one is not two
    assert one != Outer(name="b")
    with pytest.raises(AttributeError, match="frozen"):
        one.name = "b"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(one)) == one
    assert "s3cret" not in repr(one) and "dsn" not in repr(one)  # Field(repr=False), as in pydantic


def test_a_plain_instance_is_accepted_where_its_model_is_expected() -> None:
    inner = Inner(size=7)
    assert Outer(name="a", inner=inner).inner is inner
    assert Inner.model_validate(inner) is inner


def test_dump_and_copy() -> None:
    outer = Outer(name="a", doubled=1)
    assert outer.model_dump(exclude_defaults=True) == {"name": "a", "doubled": 2}
    assert outer.model_dump()["inner"] == {"size": 3}
    assert outer.model_copy(update={"name": "b"}).name == "b" and outer.name == "a"


def test_the_schema_is_the_checking_forms() -> None:
    schema = Outer.twin().model_json_schema()
    assert schema["properties"]["for"]["default"] == 0.0
    assert schema["properties"]["inner"]["default"] == {"size": 3}
    assert "_upper" not in schema["properties"]


IMPORT_ONLY = """
import json, sys
import watchdogd.config, watchdogd.registry, watchdogd.families.host.probes, watchdogd.families.postgres.target
print(json.dumps([name for name in sys.modules if name.split(".")[0] in ("pydantic", "pydantic_core")]))
"""


def test_importing_the_models_loads_no_pydantic() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORT_ONLY], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []


class Counted(Model):
    value: int = 0

    @model_validator(mode="after")
    def _count(self) -> Counted:
        BUILT.append(self.value)
        return self


class Holder(Model):
    counted: Counted = model_default(Counted, value=4)


BUILT: list[Any] = []


def test_model_default_is_built_only_with_the_checking_form() -> None:
    assert BUILT == [] and Holder.__dict__["_twin"] is None  # defining Holder built and checked nothing
    assert Holder().counted.value == 4 and BUILT == [4]
