"""CLIENT LIST: parsing, the clients that are never touched, and the operator's filters.

Shared by ``redis.idle_clients`` (which picks the clients) and
``redis.client_kill`` (which re-checks each one just before killing it), so
the two can never disagree about what is protected.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from watchdogd.contracts import Params
from watchdogd.spec import Field, field_validator

PROTECTED_FLAGS: Mapping[str, str] = {
    "S": "a replica",
    "M": "the link to this replica's master",
    "P": "a pub/sub subscriber",
    "O": "a MONITOR session",
    "b": "blocked in a command (BLPOP, XREAD BLOCK...), so its idle time is waiting, not neglect",
}
"""Client flags that always exclude a client, whatever the filters say.

Replicas and the master link idle between writes by design; subscribers
and blocked workers wait for messages, which Redis counts as idle. Killing
any of them breaks replication, pub/sub or a queue consumer, never fixes a leak.
"""

UNIX_ADDRESS = "unix"
"""The ``addresses`` entry that matches clients on the unix socket (CLIENT LIST flag ``U``)."""


CLIENT_FIELDS = ("id", "addr", "name", "age", "idle", "flags", "db", "cmd", "user")
"""The CLIENT LIST fields we read, in the order :func:`client_rows` returns them.

The other twenty (buffers, memory, events) are never split out. Pub/sub
clients are recognised by their ``P`` flag, which Redis sets on any
subscription, so ``sub``/``psub``/``ssub`` are not needed.
"""

ClientRow = tuple[str, ...]
"""One client's :data:`CLIENT_FIELDS` values, in that order."""


def client_rows(raw: bytes | str) -> list[ClientRow]:
    """Every client line of a CLIENT LIST reply as a :data:`ClientRow`.

    This runs over thousands of clients every few seconds, so it does as
    little per line as it can (see ``bench/bench_redis.py``): every line of
    one reply has the same fields in the same order and values never contain
    spaces (Redis refuses them in names), so where the wanted fields sit is
    read once from the first line, and each line is split only from the left
    as far as ``flags=``/``db=`` and from the right as far as ``cmd=``; the
    twenty buffer fields in between are never split. A line with another
    number of fields, or a reply missing a field (older Redis), is parsed
    field by field.
    """
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    lines = [line for line in text.split("\n") if line]
    if not lines:
        return []
    keys = [part.partition("=")[0] for part in lines[0].split(" ")]
    if not set(CLIENT_FIELDS) <= set(keys):
        return [_row_by_fields(line) for line in lines]
    return _FastLayout(keys).rows(lines)


def _row_by_fields(line: str) -> ClientRow:
    fields = {key: value for key, _, value in (part.partition("=") for part in line.strip().split(" "))}
    return tuple(fields.get(name, "") for name in CLIENT_FIELDS)


_HEAD = CLIENT_FIELDS[:7]  # id .. db: near the start of every CLIENT LIST line since Redis 6
_TAIL = CLIENT_FIELDS[7:]  # cmd, user: near the end, after the buffer and memory fields


class _FastLayout:
    """Indexes of :data:`CLIENT_FIELDS` in one reply's lines: ``_HEAD`` from the left, ``_TAIL`` from the right."""

    def __init__(self, keys: list[str]) -> None:
        count = len(keys)
        self.spaces = count - 1
        self.head = [keys.index(name) for name in _HEAD]
        self.tail = [keys.index(name) - count for name in _TAIL]
        self.head_split = max(self.head) + 1
        self.tail_split = -min(self.tail)
        # The shape every Redis since 6.0 has; anything else goes field by field.
        self.usable = self.head_split <= count + min(self.tail)

    def rows(self, lines: list[str]) -> list[ClientRow]:
        if not self.usable:
            return [_row_by_fields(line) for line in lines]
        i_id, i_addr, i_name, i_age, i_idle, i_flags, i_db = self.head
        i_cmd, i_user = self.tail
        head_split, tail_split, spaces = self.head_split, self.tail_split, self.spaces
        rows: list[ClientRow] = []
        append = rows.append
        for line in lines:
            if line.count(" ") != spaces:
                append(_row_by_fields(line))
                continue
            parts = line.split(" ", head_split)
            rest = parts[-1].rsplit(" ", tail_split)
            # The slices drop "id=", "addr=", ...: a key's length never changes.
            append((parts[i_id][3:], parts[i_addr][5:], parts[i_name][5:], parts[i_age][4:],
                    parts[i_idle][5:], parts[i_flags][6:], parts[i_db][3:], rest[i_cmd][4:], rest[i_user][5:]))
        return rows


def parse_client_list(raw: bytes | str) -> list[dict[str, str]]:
    """The same rows as dicts, for the few-clients paths (client_kill's re-check, tests)."""
    return [dict(zip(CLIENT_FIELDS, row, strict=True)) for row in client_rows(raw)]


def protected_reason(flags: str, name: str, own_name: str) -> str | None:
    """Why a client must never be killed, or None. ``flags`` is CLIENT LIST's ``flags=`` value."""
    if name == own_name:
        return "watchdogd's own connection"
    if flags == "N":  # no flag at all: the common case, decided without the loop
        return None
    for flag, why in PROTECTED_FLAGS.items():
        if flag in flags:
            return why
    return None


def client_ip(addr: str, flags: str) -> str | None:
    """The peer's IP address, or None for a unix-socket client."""
    if "U" in flags:
        return None
    return addr.rpartition(":")[0].strip("[]") or None


def _globs(patterns: Sequence[str]) -> re.Pattern[str]:
    """Many globs compiled into one regex: one match call per client instead of one per pattern."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


_IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: Sequence[str]) -> tuple[tuple[_IpNetwork, ...], bool]:
    networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries if entry != UNIX_ADDRESS)
    return networks, UNIX_ADDRESS in entries


class ClientFilterParams(Params):
    """Which clients an operator means. Empty include lists mean "all"; excludes win.

    ``names`` and ``commands`` are globs (``celery*``, ``client|*``); an empty
    string in ``names`` means clients that set no name. ``addresses`` are IPs
    or networks (``10.0.0.0/8``), or ``unix`` for the local socket.
    """

    names: list[str] = []
    exclude_names: list[str] = []
    users: list[str] = []
    exclude_users: list[str] = []
    addresses: list[str] = []
    exclude_addresses: list[str] = []
    commands: list[str] = Field(default=[], description="last command (CLIENT LIST cmd=), lower case")
    exclude_commands: list[str] = []

    @field_validator("addresses", "exclude_addresses")
    @classmethod
    def _check_addresses(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if entry == UNIX_ADDRESS:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network like 10.0.0.0/8 (or 'unix')"
                ) from None
        return entries

    @field_validator("commands", "exclude_commands")
    @classmethod
    def _lower(cls, entries: list[str]) -> list[str]:
        return [entry.lower() for entry in entries]


_FIELD_INDEX = {name: i for i, name in enumerate(CLIENT_FIELDS)}
_ADDR, _NAME, _FLAGS = (_FIELD_INDEX[name] for name in ("addr", "name", "flags"))


class ClientFilter:
    """Compiled form of :class:`ClientFilterParams`, built once per probe.

    :meth:`select` applies one configured check at a time to the whole list
    (one comprehension per check, a regex match per client), which costs a
    fraction of a per-client function testing every option.
    """

    def __init__(self, params: ClientFilterParams) -> None:
        checks: list[tuple[int, Callable[[str], object], bool]] = []
        for name, include, exclude in (
            ("name", params.names, params.exclude_names),
            ("user", params.users, params.exclude_users),
            # CLIENT LIST prints command names in lower case; the params are lowered by validation.
            ("cmd", params.commands, params.exclude_commands),
        ):
            if include:
                checks.append((_FIELD_INDEX[name], _globs(include).match, True))
            if exclude:
                checks.append((_FIELD_INDEX[name], _globs(exclude).match, False))
        self._checks = tuple(checks)
        self._addresses = _networks(params.addresses) if params.addresses else None
        self._exclude_addresses = _networks(params.exclude_addresses) if params.exclude_addresses else None

    def select(self, rows: list[ClientRow]) -> list[ClientRow]:
        """The rows the operator means, in their order."""
        for index, match, wanted in self._checks:
            if wanted:
                rows = [row for row in rows if match(row[index]) is not None]
            else:
                rows = [row for row in rows if match(row[index]) is None]
        if self._addresses is not None:
            networks = self._addresses
            rows = [row for row in rows if _in(client_ip(row[_ADDR], row[_FLAGS]), networks)]
        if self._exclude_addresses is not None:
            networks = self._exclude_addresses
            rows = [row for row in rows if not _in(client_ip(row[_ADDR], row[_FLAGS]), networks)]
        return rows


def unprotected(rows: list[ClientRow], own_name: str) -> list[ClientRow]:
    """The rows that may be acted on at all (see :data:`PROTECTED_FLAGS`)."""
    return [
        row for row in rows
        if row[_NAME] != own_name and (row[_FLAGS] == "N" or protected_reason(row[_FLAGS], "", own_name) is None)
    ]


def _in(ip: str | None, networks: tuple[tuple[_IpNetwork, ...], bool]) -> bool:
    nets, unix = networks
    if ip is None:
        return unix
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in nets)


def client_details(client: Mapping[str, str], run_id: str) -> dict[str, Any]:
    """What the audit log shows for a client, and what client_kill needs to be sure it is the same one.

    Client ids are unique only within one server run, so the run id travels
    with them: after a restart the same id is somebody else.
    """
    return dict(ClientDetails(tuple(client.get(name, "") for name in CLIENT_FIELDS), run_id))


_INT_FIELDS = frozenset({"id", "idle", "age"})


class ClientDetails(Mapping[str, Any]):
    """A reading's details for one client, read from its row on access.

    ``redis.idle_clients`` returns one reading per client, thousands per run,
    and only the few that breach are ever looked at (by client_kill and the
    audit log); a lazy view costs one small object per client instead of a
    dict plus three int conversions (see ``bench/bench_redis.py``).
    """

    __slots__ = ("_row", "_run_id")
    KEYS = ("id", "addr", "name", "user", "idle", "age", "cmd", "run_id")

    def __init__(self, row: ClientRow, run_id: str) -> None:
        self._row = row
        self._run_id = run_id

    def __getitem__(self, key: str) -> Any:
        if key == "run_id":
            return self._run_id
        if key not in self.KEYS:
            raise KeyError(key)
        value = self._row[_FIELD_INDEX[key]]
        return int(value or 0) if key in _INT_FIELDS else value

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    def __repr__(self) -> str:
        return repr(dict(self))


IDLE_BUCKETS: tuple[tuple[int, str], ...] = (
    (10, "under 10s"), (60, "10s to 1m"), (600, "1m to 10m"), (3600, "10m to 1h"), (86400, "1h to 1d"),
)
"""Upper bounds (seconds, exclusive) of the idle-time buckets of the evidence; the rest is "over 1d"."""
_OVER = "over 1d"


def idle_bucket(seconds: int) -> str:
    return next((name for bound, name in IDLE_BUCKETS if seconds < bound), _OVER)


def summarize_clients(rows: Sequence[ClientRow], own_name: str, max_items: int) -> dict[str, Any]:
    """CLIENT LIST as counts, for the evidence of a firing Redis rule: who is connected, doing what.

    Counts by flags, last command, idle time and peer IP (a leaking pool
    shows as one IP with thousands of idle clients), then the longest-idle
    clients by ``ip:port``, id and age. Client names are left out on purpose
    (they are free text an application chooses), and CLIENT LIST carries no
    command arguments. watchdogd's own connections are counted but never
    listed as idle clients: the pool idles between probes by design.
    """
    by_flags: dict[str, int] = {}
    by_command: dict[str, int] = {}
    by_idle: dict[str, int] = {name: 0 for _, name in IDLE_BUCKETS} | {_OVER: 0}
    by_ip: dict[str, int] = {}
    for row in rows:
        flags, idle = row[_FLAGS], int(row[_FIELD_INDEX["idle"]] or 0)
        by_flags[flags] = by_flags.get(flags, 0) + 1
        cmd = row[_FIELD_INDEX["cmd"]] or "-"
        by_command[cmd] = by_command.get(cmd, 0) + 1
        by_idle[idle_bucket(idle)] += 1
        ip = client_ip(row[_ADDR], flags) or UNIX_ADDRESS
        by_ip[ip] = by_ip.get(ip, 0) + 1
    others = [row for row in rows if row[_NAME] != own_name]
    longest = sorted(others, key=lambda row: -int(row[_FIELD_INDEX["idle"]] or 0))[:max_items]
    return {
        "clients": len(rows),
        "by_flags": top_counts(by_flags, max_items),
        "by_command": top_counts(by_command, max_items),
        "by_idle": {name: n for name, n in by_idle.items() if n},
        "by_ip": top_counts(by_ip, max_items),
        "longest_idle": [{
            "id": int(row[_FIELD_INDEX["id"]] or 0),
            "addr": row[_ADDR],
            "user": row[_FIELD_INDEX["user"]][:100],
            "db": row[_FIELD_INDEX["db"]],
            "flags": row[_FLAGS],
            "cmd": row[_FIELD_INDEX["cmd"]],
            "age": int(row[_FIELD_INDEX["age"]] or 0),
            "idle": int(row[_FIELD_INDEX["idle"]] or 0),
        } for row in longest],
    }


def top_counts(counts: Mapping[str, int], max_items: int) -> dict[str, int]:
    """The ``max_items`` largest counts, the rest folded into ``(other)`` so the total still adds up."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = dict(ranked[:max_items])
    rest = sum(n for _, n in ranked[max_items:])
    if rest:
        top["(other)"] = rest
    return top
