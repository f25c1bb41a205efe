"""Config models the daemon can hold without loading pydantic (issue 17: pydantic is 6-8 MiB of every daemon).

Every config model (the top-level keys, a target's, probe's or action's
``params``, a notify sink, the fleet section) is written once, against the
names below, which mirror pydantic's (``Field``, ``field_validator``,
``model_validator``, ``BeforeValidator``...). A class so written has two forms:

- **the plain form** (the class itself): frozen objects with the validated
  values as attributes, equality, hashing, ``repr``, ``model_dump`` and
  ``model_copy``. Nothing here imports pydantic. This is what the engine and the
  families run on, and what crosses the pipe from the process that checked the
  config to the daemon (``watchdogd.configchild``).
- **the checking form** (``twin``): a pydantic model built on first use from
  the class's own annotations, defaults and validators, so every message the
  operator reads, the JSON Schema and "report every problem at once" stay
  pydantic's. Checking (``Model(...)``, ``Model.model_validate``) goes through it
  and hands back the plain form.

The daemon never checks: it asks a short-lived child to load the config and
receives the plain objects, so pydantic, its validators and its schemas live
and die in that child.

Validators see the checking form (``self`` is the pydantic instance); nested
models are already plain by then, with the same attributes. Methods of a model
are copied to its checking form, so they must not use zero-argument ``super()``.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, Union, cast, get_args, get_origin

if TYPE_CHECKING:
    import pydantic
    from pydantic_core import core_schema

M = TypeVar("M", bound="Model")
F = TypeVar("F", bound=Callable[..., Any])


class _Missing:
    """No default: the key is required."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def ConfigDict(**settings: Any) -> dict[str, Any]:
    """The pydantic model settings (``extra``, ``frozen``, ``populate_by_name``...), passed on as they are."""
    return dict(settings)


class FieldSpec:
    """What ``Field()`` declares: a default (or factory), an alias, and pydantic's constraints as they are."""

    __slots__ = ("alias", "default", "default_factory", "options")

    def __init__(
        self, default: Any = MISSING, *, default_factory: Callable[[], Any] | None = None, alias: str | None = None,
        **options: Any,
    ) -> None:
        self.default = default
        self.default_factory = default_factory
        self.alias = alias
        self.options = options

    def pydantic(self) -> Any:
        import pydantic  # noqa: PLC0415 (checking only)

        extra: dict[str, Any] = {"alias": self.alias} if self.alias is not None else {}
        if self.default_factory is not None:
            extra["default_factory"] = self.default_factory
        elif self.default is not MISSING:
            extra["default"] = _checking_default(self.default)
        return pydantic.Field(**extra, **self.options)


def Field(
    default: Any = MISSING, *, default_factory: Callable[[], Any] | None = None, alias: str | None = None,
    **options: Any,
) -> Any:
    """A field's default and constraints (``ge``, ``le``, ``min_length``, ``pattern``, ``description``...)."""
    return FieldSpec(default, default_factory=default_factory, alias=alias, **options)


class _LaterDefault:
    __slots__ = ("model", "values")

    def __init__(self, model: type[Model], values: dict[str, Any]) -> None:
        self.model = model
        self.values = values

    def build(self) -> Model:
        return self.model(**self.values)


def model_default(model: type[Model], **values: Any) -> Any:
    """A default that is itself a model: built (and checked) with the checking form, so an import checks nothing."""
    return _LaterDefault(model, values)


def _checking_default(value: Any) -> Any:
    return value.build() if isinstance(value, _LaterDefault) else value


class _Private:
    __slots__ = ("default",)

    def __init__(self, default: Any) -> None:
        self.default = default


def PrivateAttr(default: Any = None) -> Any:
    """An attribute a validator computes (a conninfo, a compiled pattern); not a key of the config."""
    return _Private(default)


class _Validator:
    """A validator as declared; the checking form passes it to pydantic's decorator of the same name."""

    __slots__ = ("fields", "func", "kind", "mode")

    def __init__(self, kind: str, func: Any, fields: tuple[str, ...], mode: str) -> None:
        self.kind = kind
        self.func = func
        self.fields = fields
        self.mode = mode

    def pydantic(self) -> Any:
        import pydantic  # noqa: PLC0415 (checking only)

        if self.kind == "field":
            return pydantic.field_validator(*self.fields, mode=self.mode)(self.func)  # type: ignore[call-overload]
        return pydantic.model_validator(mode=self.mode)(self.func)  # type: ignore[call-overload]


def field_validator(*fields: str, mode: Literal["before", "after", "wrap", "plain"] = "after") -> Callable[[F], F]:
    def mark(func: F) -> F:
        return _Validator("field", func, fields, mode)  # type: ignore[return-value]

    return mark


def model_validator(*, mode: Literal["before", "after", "wrap"]) -> Callable[[F], F]:
    def mark(func: F) -> F:
        return _Validator("model", func, (), mode)  # type: ignore[return-value]

    return mark


class _Marker:
    """Annotated metadata (``Annotated[float, BeforeValidator(parse)]``) standing for pydantic's class of that name."""

    __slots__ = ("args", "kwargs")
    name: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs

    def pydantic(self) -> Any:
        import pydantic  # noqa: PLC0415 (checking only)

        return getattr(pydantic, self.name)(*self.args, **self.kwargs)


class BeforeValidator(_Marker):
    name = "BeforeValidator"


class AfterValidator(_Marker):
    name = "AfterValidator"


class WithJsonSchema(_Marker):
    name = "WithJsonSchema"


class StringConstraints(_Marker):
    name = "StringConstraints"


class SecretStr:
    """A password or token: ``repr`` and ``str`` never show it; ``get_secret_value()`` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self._value else "SecretStr('')"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        """Checked as pydantic's SecretStr (its messages, its JSON Schema), kept as this class."""
        import pydantic  # noqa: PLC0415 (checking only)
        from pydantic_core import core_schema  # noqa: PLC0415

        return core_schema.no_info_after_validator_function(
            lambda secret: cls(secret.get_secret_value()),
            handler.generate_schema(pydantic.SecretStr),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


_SKIP = frozenset({"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__", "__doc__",
                   "model_fields", "_declared", "_twin"})
"""What of a plain class's namespace its checking form does not take over (pydantic's or set below)."""


def _is_field(name: str, annotation: Any) -> bool:
    return not name.startswith("_") and not str(annotation).startswith(("ClassVar", "typing.ClassVar"))


class Model:
    """Base of every config model: frozen, compared and hashed by value, checked only through ``twin()``."""

    model_config: ClassVar[dict[str, Any]] = {}
    model_fields: ClassVar[dict[str, FieldSpec]] = {}
    """Every field (inherited ones too) by name: its default and alias."""
    _declared: ClassVar[dict[str, Any]] = {}
    """This class's own defaults, validators and private attributes as written, for the checking form."""
    _twin: ClassVar[type[pydantic.BaseModel] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        declared: dict[str, Any] = {}
        fields = dict(cls.model_fields)
        for name, annotation in inspect.get_annotations(cls).items():
            value = own.get(name, MISSING)
            declared[name] = value
            if not _is_field(name, annotation):
                continue
            spec = value if isinstance(value, FieldSpec) else FieldSpec(value)
            fields[name] = spec
            if name in own:
                delattr(cls, name)  # as pydantic does: a field is an instance's, never the class's
        for name, value in list(own.items()):
            if isinstance(value, _Validator):
                declared[name] = value
                delattr(cls, name)
            elif isinstance(value, _Private):
                declared[name] = value
                setattr(cls, name, value.default)
        cls.model_fields = fields
        cls._declared = declared
        cls._twin = None
        cls.model_config = {**cls.model_config, **own.get("model_config", {})}

    def __init__(self, **data: Any) -> None:
        """Checks ``data`` as pydantic would (raising its ValidationError); the daemon never calls this."""
        checked = type(self).twin().model_validate(data)
        self.__dict__.update(_plain_state(checked))

    @classmethod
    def model_validate(cls: type[M], data: Any) -> M:
        if isinstance(data, cls):  # already checked, as pydantic takes an instance of the model
            return data
        return cast(M, _plain(cls.twin().model_validate(data)))

    @classmethod
    def construct_checked(cls: type[M], values: Mapping[str, Any]) -> M:
        """The plain form of values the checking form has already accepted (nothing is checked again)."""
        made = object.__new__(cls)
        made.__dict__.update(values)
        return made

    @classmethod
    def twin(cls) -> type[pydantic.BaseModel]:
        """The checking form, built once per class on first use (pydantic is loaded then, not before)."""
        twin = cls.__dict__.get("_twin")
        if twin is None:
            twin = _build_twin(cls)
            cls._twin = twin
        return twin

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        """A field typed with a model is checked by that model's checking form and kept in plain form.

        A plain instance given as the value (a default, or a model built in code) is already checked.
        """
        from pydantic_core import core_schema  # noqa: PLC0415 (checking only)

        def check(value: Any, checking: Callable[[Any], Any]) -> Any:
            return value if isinstance(value, cls) else _plain(checking(value))

        return core_schema.no_info_wrap_validator_function(
            check,
            handler.generate_schema(cls.twin()),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda plain: plain.model_dump()),
        )

    def _fields(self) -> Iterator[tuple[str, Any]]:
        for name in self.model_fields:
            yield name, self.__dict__[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if self.model_config.get("frozen") and not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be set")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *(value for _, value in self._fields())))

    def __repr__(self) -> str:
        fields = self.model_fields
        shown = (f"{name}={value!r}" for name, value in self._fields() if fields[name].options.get("repr", True))
        return f"{type(self).__name__}({', '.join(shown)})"

    def model_dump(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        """Fields by name, nested models as dicts; with ``exclude_defaults``, only values the config set."""
        return {
            name: _dump(value)
            for name, value in self._fields()
            if not (exclude_defaults and _is_default(self.model_fields[name], value))
        }

    def model_copy(self: M, *, update: Mapping[str, Any] | None = None) -> M:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(update or {})
        return copy


def _is_default(spec: FieldSpec, value: Any) -> bool:
    if spec.default_factory is not None:
        return bool(value == spec.default_factory())
    if isinstance(spec.default, _LaterDefault):
        return bool(value == spec.default.build())
    return spec.default is not MISSING and bool(value == spec.default)


def _dump(value: Any) -> Any:
    if isinstance(value, Model):
        return value.model_dump()
    if isinstance(value, list | tuple):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {key: _dump(item) for key, item in value.items()}
    return value


# --------------------------------------------------------------------------- the checking form


def _plain(checked: Any) -> Model:
    """The plain form of a checked pydantic instance (``__plain_class__`` is set on every checking form)."""
    plain_class: type[Model] = type(checked).__plain_class__
    return plain_class.construct_checked(_plain_state(checked))


def _plain_state(checked: Any) -> dict[str, Any]:
    """A checked pydantic instance's fields and private attributes, as the plain form holds them."""
    return {**checked.__dict__, **(checked.__pydantic_private__ or {})}


def _build_twin(cls: type[Model]) -> type[pydantic.BaseModel]:
    import pydantic  # noqa: PLC0415 (checking only: the daemon never gets here)

    bases = tuple(
        base.twin() for base in cls.__bases__ if issubclass(base, Model) and base is not Model
    ) or (pydantic.BaseModel,)
    module = sys.modules[cls.__module__].__dict__
    namespace: dict[str, Any] = {name: value for name, value in cls.__dict__.items() if name not in _SKIP}
    annotations: dict[str, Any] = {}
    for name, annotation in inspect.get_annotations(cls).items():
        resolved = eval(annotation, module, {cls.__name__: cls}) if isinstance(annotation, str) else annotation  # noqa: S307 (our own annotations, as typing.get_type_hints does)
        annotations[name] = _checking_type(resolved)
    for name, value in cls._declared.items():
        if isinstance(value, _Validator):
            namespace[name] = value.pydantic()
        elif isinstance(value, _Private):
            namespace[name] = pydantic.PrivateAttr(default=value.default)
        elif isinstance(value, FieldSpec):
            namespace[name] = value.pydantic()
        elif value is not MISSING:
            namespace[name] = _checking_default(value)
    namespace.update(
        __module__=cls.__module__, __qualname__=cls.__qualname__, __annotations__=annotations,
        __doc__=cls.__doc__, model_config=pydantic.ConfigDict(**cls.__dict__.get("model_config", {})),  # type: ignore[typeddict-item]
    )
    namespace["__plain_class__"] = cls
    return types.new_class(cls.__name__, bases, {}, lambda ns: ns.update(namespace))


def _checking_type(annotation: Any) -> Any:
    """``annotation`` with this module's markers replaced by pydantic's own (models stay: they convert themselves)."""
    origin = get_origin(annotation)
    if origin is None or origin is Literal:
        return annotation
    args = get_args(annotation)
    if origin is Annotated:
        inner, *metadata = args
        return Annotated[(_checking_type(inner), *(_checking_metadata(item) for item in metadata))]
    checked = tuple(_checking_type(arg) for arg in args)
    if checked == args:
        return annotation
    if origin in (Union, types.UnionType):
        return Union[checked]  # noqa: UP007 (built from a tuple)
    if isinstance(annotation, types.GenericAlias):
        return types.GenericAlias(origin, checked)
    return annotation.copy_with(checked)


def _checking_metadata(item: Any) -> Any:
    return item.pydantic() if isinstance(item, _Marker | FieldSpec) else item
