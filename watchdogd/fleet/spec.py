"""The ``fleet:`` section of the config (validated models).

A fleet budget is opt-in: without ``fleet:`` nothing talks to a
coordinator. Each coordinator kind is one key (``etcd:`` or ``redis:``)
like a notification sink, so an unknown setting for the chosen kind is an
error with its line rather than silently ignored. Passwords come from a
file or the environment, never inline.
"""

from __future__ import annotations

from typing import Annotated, Literal

from watchdogd.spec import BeforeValidator, ConfigDict, Field, Model, StringConstraints, model_validator
from watchdogd.units import Timeout, Window, duration_between

MAX_GROUPS = 64
MAX_ENDPOINTS = 16
MAX_HOSTS = 1000
MAX_RUNS = 10_000
LeaseTtl = Annotated[float, BeforeValidator(duration_between(2.0, 300.0))]
"""2 s to 5 min: shorter leases flap on a busy coordinator, longer ones keep a dead host's slot for ages."""
GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Prefix = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EtcdSettings(_Strict):
    """etcd v3 through its JSON gateway (``/v3/``), the same port as gRPC (2379 by default)."""

    endpoints: list[Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+/?$")]] = Field(
        min_length=1, max_length=MAX_ENDPOINTS
    )
    prefix: Prefix = "/watchdogd/fleet/"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EtcdSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        if self.password_file and self.password_env:
            raise ValueError("give the password as password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        return self


class RedisSettings(_Strict):
    """One Redis server (not Sentinel, not Cluster): weaker than etcd, see docs/fleet.md."""

    url: str = Field(pattern=r"^rediss?://[^\s@]+$")
    """``redis://host:port/db`` or ``rediss://`` for TLS; no password in the URL (use password_file)."""
    prefix: Prefix = "watchdogd:fleet:"
    ca_file: str | None = None
    password_file: str | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _one_password(self) -> RedisSettings:
        if self.password_file and self.password_env:
            raise ValueError("give the password as password_file or password_env, not both")
        return self


class CoordinatorSettings(_Strict):
    etcd: EtcdSettings | None = None
    redis: RedisSettings | None = None
    lease_ttl: LeaseTtl = 15.0
    """A host that dies or loses the coordinator gives its slots back after at most this long."""
    timeout: Timeout = 2.0
    """Longest wait for the coordinator per decision; then the group's ``on_unavailable`` applies."""

    @model_validator(mode="after")
    def _one_kind(self) -> CoordinatorSettings:
        if (self.etcd is None) == (self.redis is None):
            raise ValueError("a coordinator is either etcd: {...} or redis: {...}")
        if self.timeout >= self.lease_ttl / 2:
            raise ValueError("timeout must be under half of lease_ttl, or a slow answer could outlive the lease")
        return self

    @property
    def kind(self) -> str:
        return "etcd" if self.etcd is not None else "redis"


class GroupSettings(_Strict):
    """One group the fleet shares: which runs belong to it and how many may run."""

    max_hosts: int = Field(ge=1, le=MAX_HOSTS)
    """Runs of the group's rules at once, fleet-wide (a host acting for two rules of it holds two)."""
    max_runs: int | None = Field(default=None, ge=1, le=MAX_RUNS)
    per: Window = 600.0
    rules: list[str] = Field(default_factory=list, max_length=10_000)
    actions: list[str] = Field(default_factory=list, max_length=256)
    """Action kinds (``systemd.restart``): every rule with one of them belongs to the group."""
    on_unavailable: Literal["skip", "host"] = "skip"
    """The coordinator does not answer, or the lease is lost mid-run: ``skip`` (fail closed: the
    run is skipped, or its remaining actions are not started) or ``host`` (fall back to the host budget)."""

    @model_validator(mode="after")
    def _names_something(self) -> GroupSettings:
        if not self.rules and not self.actions:
            raise ValueError("a group names its rules (rules: [...]) or action kinds (actions: [...])")
        return self


class FleetSection(_Strict):
    host: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] | None = None
    """This host's name in the fleet (holders, audit rows); default: the host name."""
    coordinator: CoordinatorSettings
    groups: dict[GroupName, GroupSettings] = Field(min_length=1, max_length=MAX_GROUPS)
