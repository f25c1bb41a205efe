"""YAML policy -> validated, frozen config objects.

Validation runs in phases (top level, then each target, rule, probe params,
action and threshold on its own) so that one file reports *all* of its
mistakes at once, each as ``file:line: key.path: message``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

from watchdogd import hazards
from watchdogd.configfiles import FileProblem, Sources, merge_includes, read_text
from watchdogd.configtypes import HOST_WIDE, ActionConfig, Config, ConfigError, EvidenceSettings, Rule
from watchdogd.contracts import ActionParams, ActionSpec, Params, describe_kinds
from watchdogd.core.guard import BudgetPolicy, GuardPolicy
from watchdogd.core.policy import Thresholds
from watchdogd.core.trend import Prediction
from watchdogd.fleet.spec import FleetSection
from watchdogd.model import Cardinality, Unit
from watchdogd.notifyspec import NotifyPolicy, NotifySection
from watchdogd.registry import DEFAULT, Registry
from watchdogd.secrets import resolve_secret
from watchdogd.spec import ConfigDict, Field, Model, model_default, model_validator
from watchdogd.units import THRESHOLD_PARSERS, Duration, Interval, ShortDuration, Size, Timeout, Window
from watchdogd.yamlsource import KeyPath, Located, YamlError, load_located

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]
"""A load returns a ``Config`` or raises ``ConfigError`` (both in ``configtypes``, which the daemon imports alone)."""

SEVERITIES = ("info", "warning", "critical")
FOR_SLACK = 0.25
"""Fraction of a rule's interval by which ``for`` may fall short and still be met (see Thresholds.for_slack)."""
MAX_COUNT = 100_000
"""Upper bound of the action counts (``budget.actions``, ``max_actions.count``): far past any sane limit."""
M = TypeVar("M", bound=Model)
S = TypeVar("S")
_FROZEN_DATACLASSES = (Thresholds, GuardPolicy)
"""What ``_Builder.share`` may hand to many rules besides frozen models: frozen, slotted, numbers and flags only."""


# ---------------------------------------------------------------------------
# Raw schema: what the YAML may contain. Unknown keys are errors everywhere.


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Budget(_Strict):
    kind: Literal["host"] = "host"
    """Where the count is kept: ``host`` (this host's state). A bound shared by many hosts is ``fleet:``."""
    actions: int = Field(ge=1, le=MAX_COUNT)
    per: Window


class _Evidence(_Strict):
    timeout: Timeout = 2.0
    """How long a probe may take to describe (then it is abandoned and the error is the evidence)."""
    max_bytes: Size = 64 * 1024
    show_queries: bool = False
    """PostgreSQL query texts and Redis command arguments in evidence; redacted unless true."""

    @model_validator(mode="after")
    def _sane(self) -> _Evidence:
        if not 1024 <= self.max_bytes <= 16 * 2**20:
            raise ValueError("max_bytes must be from 1KiB to 16MiB")
        return self


class _MaxActions(_Strict):
    count: int = Field(ge=1, le=MAX_COUNT)
    per: Window


class _RawConfig(_Strict):
    interval: Interval = 15.0
    jitter: ShortDuration | None = None
    probe_timeout: Timeout = 10.0
    listen: str | None = "127.0.0.1:19469"
    web_config_file: str | None = None
    http_keepalive_idle: Duration = Field(default=120.0, ge=1.0, le=3600.0)
    """How long an idle keep-alive connection to ``listen`` stays open: longer than a scrape interval (15 s to
    1 m), so Prometheus reuses its connection instead of reconnecting (and re-handshaking TLS) every scrape."""
    textfile_dir: str | None = None
    release_start_pages_after: Annotated[Duration, Field(ge=1.0, le=3600.0)] | None = 60.0
    """The latest moment after a start or a reload at which the daemon hands back the pages of shared libraries
    it touched only while starting (memory.release_file_pages): it does so as soon as every enabled rule has
    run once, or at this deadline if one has not (a rule waiting on a dependency); null: never."""
    state_dir: str = "/var/lib/watchdogd"
    control_socket: str = "/run/watchdogd/control.sock"
    control_group: str | None = None
    dry_run: bool = False
    budget: _Budget = model_default(_Budget, actions=30, per=3600.0)
    grace: Duration = 60.0
    history_retention: Duration = 30 * 86400.0
    stuck_probes_restart: int = Field(default=16, ge=0, le=1000)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    notify: NotifySection = Field(default_factory=NotifySection)
    evidence: _Evidence = model_default(_Evidence)
    fleet: FleetSection | None = None


class _Sections(_Strict):
    """Checked apart from the scalars above so that a typo in ``interval`` still lets every rule be checked."""

    targets: dict[str, dict[str, dict[str, Any]]] = {}
    rules: dict[str, Any] = {}


class _RawPredict(_Strict):
    """``predict:``: fire on where the value is heading, not where it is (see core/trend.py)."""

    above: Any = None
    below: Any = None
    within: Duration = Field(gt=0, le=30 * 86400.0)
    over: Duration = Field(default=3600.0, gt=0, le=7 * 86400.0)
    min_samples: int = Field(default=5, ge=3, le=10_000)


class _RawRule(_Strict):
    probe: str
    target: str | None = None
    params: dict[str, Any] = {}
    description: str = ""
    above: Any = None
    below: Any = None
    clear_above: Any = None
    clear_below: Any = None
    for_: Duration = Field(default=0.0, alias="for")
    hold: Duration = 0.0
    predict: _RawPredict | None = None
    every: Interval | None = None
    timeout: Timeout | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    dry_run: bool = False
    actions: list[dict[str, dict[str, Any] | None]] = []
    cooldown: Duration = 300.0
    max_cooldown: Duration | None = None
    stable_for: Duration = 600.0
    max_actions: _MaxActions = model_default(_MaxActions, count=5, per=3600.0)
    verify_after: ShortDuration = 0.0
    on_down: Literal["fire", "hold"] | None = None
    depends_on: str | list[str] = []
    notify: dict[str, Any] | None = None  # merged over notify.default, then checked as a NotifyPolicy


# ---------------------------------------------------------------------------
# Loading


def load_config(
    path: Path, *, force_dry_run: bool = False, check_permissions: bool = True, registry: Registry = DEFAULT
) -> Config:
    """Read, check and resolve a config file and its drop-ins; raise ConfigError listing every problem."""
    try:
        text = read_text(path, check_permissions=check_permissions)
    except FileProblem as exc:
        raise ConfigError([str(exc)]) from exc
    return parse_config(
        text, path, force_dry_run=force_dry_run, registry=registry, check_permissions=check_permissions
    )


def parse_config(
    text: str,
    path: Path,
    *,
    force_dry_run: bool = False,
    registry: Registry = DEFAULT,
    check_permissions: bool = True,
) -> Config:
    """Raises ConfigError and nothing else, whatever ``text`` holds: a reload must never kill the daemon.

    ``check_permissions`` applies to the drop-ins ``include:`` names (the caller checked ``path``).
    """
    try:
        return _parse(text, path, force_dry_run, registry, check_permissions)
    except ConfigError as exc:
        raise ConfigError([_one_line(problem) for problem in exc.problems]) from exc
    except (RecursionError, MemoryError) as exc:
        raise ConfigError([f"{path}:1: config too large or nested too deeply to check"]) from exc
    except (ValueError, OverflowError, TypeError) as exc:
        # A checker that fails on some value is a bug to fix, but never a dead daemon.
        raise ConfigError([_one_line(f"{path}:1: cannot check this config ({type(exc).__name__}: {exc})")]) from exc


def _parse(text: str, path: Path, force_dry_run: bool, registry: Registry, check_permissions: bool) -> Config:
    try:
        located = load_located(text)
    except YamlError as exc:
        raise ConfigError([f"{path}:{exc.line}: {exc.message}"]) from exc
    if not isinstance(located.data, dict):
        raise ConfigError([f"{path}:1: the config must be a mapping of keys (interval, rules, ...)"])
    sources = merge_includes(path, located, check_permissions=check_permissions)
    builder = _Builder(path, located, registry, sources)
    config = builder.build(force_dry_run)
    problems = [*sources.problems, *builder.problems]
    if problems or config is None:
        raise ConfigError(sorted(problems, key=_file_and_line(path)))
    return replace(config, includes=tuple(sources.files))


def _one_line(problem: str) -> str:
    """Keys and values quoted in a message may hold newlines or escapes: one problem stays one line."""
    if problem.isprintable():
        return problem
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in problem)


class _Builder:
    """Collects problems while resolving; ``build`` returns None when any was found."""

    def __init__(self, path: Path, located: Located, registry: Registry, sources: Sources | None = None) -> None:
        self.path = path
        self.registry = registry
        self.located = located
        self.sources = sources or Sources(dict(located.data))
        self.problems: list[str] = []
        self.broken_targets: set[tuple[str, str]] = set()  # already reported: rules naming them stay quiet
        self._shared: dict[tuple[type, str], Any] = {}  # see share(); per load, so a reload builds afresh
        self._notify_default: dict[str, Any] = {}  # notify.default's own keys, once per load (build)

    def problem(self, key_path: KeyPath, message: str) -> None:
        """One ``file:line: key.path: message``, in the file (main or drop-in) that defined the key."""
        origins = self.sources.origins
        path, located = origins.get(key_path[:2]) or origins.get(key_path[:3]) or (self.path, self.located)
        self.problems.append(f"{path}:{located.line_of(key_path)}: {_dotted(key_path)}: {message}")

    def share(self, value: S) -> S:
        """The first equal ``value`` this load built, so rules that say the same hold one object.

        Memory at 1,000 rules (issue 17): per-rule params, notify policies, thresholds and guards
        were 1.5 MiB, nearly all copies of a dozen values. Only frozen models and frozen
        dataclasses are shared (nothing assigns to them or mutates their containers after load);
        the key is exact (the repr: 1 and 1.0 differ) and a hit must also compare equal, so
        a field the key cannot see (a secret, a private attribute) never merges two values.
        """
        if isinstance(value, Model):
            if not value.model_config.get("frozen"):
                return value
            key = repr(value)
        elif isinstance(value, _FROZEN_DATACLASSES):
            key = repr(value)
        else:
            return value
        shared = self._shared.setdefault((type(value), key), value)
        return cast("S", shared) if shared is value or shared == value else value

    def validate(self, model: type[M], data: Any, at: KeyPath) -> M | None:
        from pydantic import ValidationError  # noqa: PLC0415 (only a load checks: the daemon asks a child, configcheck)

        if data is None:
            data = {}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                self._report(model, at, err)
            return None

    def validate_partial(self, model: type[M], data: dict[str, Any], at: KeyPath) -> tuple[M | None, bool]:
        """Report problems, then retry without the offending keys so deeper checks still run."""
        from pydantic import ValidationError  # noqa: PLC0415 (as in validate)

        try:
            return model.model_validate(data), True
        except ValidationError as exc:
            errors = exc.errors()
        for err in errors:
            self._report(model, at, err)
        bad = {err["loc"][0] for err in errors if err["loc"]}
        try:
            return model.model_validate({k: v for k, v in data.items() if k not in bad}), False
        except ValidationError:
            return None, False

    def _report(self, model: type[Model], at: KeyPath, err: Mapping[str, Any]) -> None:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            self.problem((*at, *loc), f"unknown key{_did_you_mean(str(loc[-1]), allowed)}")
            return
        if err["type"] == "missing":
            self.problem((*at, *loc[:-1]), f"missing required key {loc[-1]!r}")
            return
        message = str(err["msg"]).removeprefix("Value error, ")
        self.problem((*at, *loc), message)

    # -- phases ---------------------------------------------------------------

    def build(self, force_dry_run: bool) -> Config | None:
        data = dict(self.sources.data)
        sections = self.validate(_Sections, {k: data.pop(k) for k in ("targets", "rules") if k in data}, ())
        raw = self.validate(_RawConfig, data, ())
        if sections is None:
            return None
        # Keep checking rules against defaults when a global key is wrong: report everything in one go.
        raw = raw or _RawConfig()
        dry_run = raw.dry_run or force_dry_run
        self.own = self._own_paths(raw.state_dir)
        self.share(raw.notify.default)  # first in: rules without their own ``notify:`` get this very object
        self._notify_default = raw.notify.default.model_dump(exclude_defaults=True)
        targets = self._targets(sections.targets)
        rules = {
            name: rule
            for name, body in sections.rules.items()
            if (rule := self._rule(str(name), body, raw, targets, dry_run)) is not None
        }
        self._check_dependencies(rules, set(map(str, sections.rules)))
        fleet_groups = self._fleet_groups(raw.fleet, rules, set(map(str, sections.rules)))
        if self.problems:
            return None
        return Config(
            path=self.path,
            interval=raw.interval,
            listen=raw.listen or None,
            web_config_file=raw.web_config_file,
            http_keepalive_idle=raw.http_keepalive_idle,
            release_start_pages_after=raw.release_start_pages_after,
            textfile_dir=raw.textfile_dir,
            state_dir=Path(raw.state_dir),
            control_socket=Path(raw.control_socket),
            control_group=raw.control_group,
            dry_run=dry_run,
            budget=BudgetPolicy(actions=raw.budget.actions, per=raw.budget.per, kind=raw.budget.kind),
            grace=raw.grace,
            history_retention=raw.history_retention,
            stuck_probes_restart=raw.stuck_probes_restart,
            log_format=raw.log_format,
            log_level=raw.log_level,
            targets=targets,
            rules=rules,
            notify=raw.notify,
            evidence=EvidenceSettings(raw.evidence.timeout, int(raw.evidence.max_bytes), raw.evidence.show_queries),
            registry=self.registry,
            fleet=raw.fleet,
            fleet_groups=fleet_groups,
        )

    def _targets(self, raw: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Params]]:
        resolved: dict[str, dict[str, Params]] = {}
        for kind, named in raw.items():
            spec = self.registry.targets.get(kind)
            if spec is None:
                self.problem(("targets", kind), f"unknown target kind{_did_you_mean(kind, self.registry.targets)}")
                continue
            for name, body in named.items():
                params = self.validate(spec.params, body, ("targets", kind, name))
                if params is None:
                    self.broken_targets.add((kind, str(name)))
                else:
                    resolved.setdefault(kind, {})[name] = params
        return resolved

    def _rule(
        self,
        name: str,
        body: Any,
        raw: _RawConfig,
        targets: Mapping[str, Mapping[str, Params]],
        dry_run: bool,
    ) -> Rule | None:
        at: KeyPath = ("rules", name)
        if name == HOST_WIDE:
            self.problem(at, f"{HOST_WIDE!r} stands for the whole host in the audit log and the history "
                         "(maintenance mode): give the rule another name")
            return None
        if not isinstance(body, dict):
            self.problem(at, "a rule must be a mapping (probe, above, actions, ...)")
            return None
        rule, rule_ok = self.validate_partial(_RawRule, body, at)
        if rule is None:
            return None
        spec = self.registry.probes.get(rule.probe)
        if spec is None:
            hint = _did_you_mean(rule.probe, self.registry.probes)
            self.problem((*at, "probe"), f"unknown probe {rule.probe!r}{hint}")
            return None
        params = self.validate(spec.params, rule.params, (*at, "params"))
        if params is not None:
            params = self.share(params)
        target = self._target_ref(rule.target, spec.target_kind, targets, (*at, "target"))
        every = rule.every or raw.interval
        predict = self._predict(rule, spec.unit, spec.cardinality, every, at)
        # A ``predict:`` with a mistake in it is reported as such, not again as "no threshold".
        thresholds = self._thresholds(rule, spec.unit, at, every, predict, "predict" in body)
        actions = tuple(
            action
            for index, item in enumerate(rule.actions)
            if (action := self._action(item, rule.probe, rule.target, targets, (*at, "actions", index))) is not None
        )
        if not rule_ok or params is None or thresholds is None or len(actions) != len(rule.actions):
            return None
        if "predict" in body and predict is None:
            return None
        on_down = rule.on_down or ("fire" if spec.availability else "hold")
        if on_down == "fire" and spec.cardinality is Cardinality.HIGH:
            self.problem(
                (*at, "on_down"),
                f"{rule.probe} measures one subject per connection or process; an outage has no such "
                f"subject to fire on: use an availability probe ({self._availability_probes(rule.probe)}) for it",
            )
            return None
        cooldown = rule.cooldown
        max_cooldown = rule.max_cooldown if rule.max_cooldown is not None else min(cooldown * 16, 86400.0)
        if max_cooldown < cooldown:
            self.problem((*at, "max_cooldown"), "must be at least the cooldown")
            return None
        timeout, timeout_source = _effective_timeout(rule.timeout, raw.probe_timeout, every)
        notify = self._notify_policy(rule.notify, raw.notify, (*at, "notify"))
        if notify is None:
            return None
        return Rule(
            name=name,
            probe=rule.probe,
            target=target,
            params=params,
            unit=spec.unit,
            cardinality=spec.cardinality,
            thresholds=self.share(thresholds),
            every=every,
            # Spread the cycles of an interval (its rules run together, see engine/scheduler.py) over hosts.
            jitter=raw.jitter if raw.jitter is not None else min(every * 0.1, 5.0),
            timeout=timeout,
            timeout_source=timeout_source,
            severity=rule.severity,
            enabled=rule.enabled,
            dry_run=dry_run or rule.dry_run,
            actions=actions,
            guard=self.share(
                GuardPolicy(
                    cooldown=cooldown,
                    max_cooldown=max_cooldown,
                    stable_for=rule.stable_for,
                    max_actions=rule.max_actions.count,
                    max_actions_per=rule.max_actions.per,
                    dry_run=dry_run or rule.dry_run,
                )
            ),
            verify_after=rule.verify_after,
            description=rule.description,
            on_down=on_down,
            depends_on=_names(rule.depends_on),
            notify=notify,
            predict=predict,
        )

    def _predict(
        self, rule: _RawRule, unit: Unit, cardinality: Cardinality, every: float, at: KeyPath
    ) -> Prediction | None:
        """``predict:`` with its line read in the probe's unit; refused where it cannot mean anything."""
        raw = rule.predict
        if raw is None:
            return None
        at = (*at, "predict")
        parse = THRESHOLD_PARSERS[unit]
        lines: dict[str, float | None] = {}
        for key in ("above", "below"):
            value = getattr(raw, key)
            try:
                lines[key] = None if value is None else parse(value)
            except ValueError as exc:
                self.problem((*at, key), str(exc))
                return None
        problems: tuple[tuple[bool, KeyPath, str], ...] = (
            ((lines["above"] is None) == (lines["below"] is None), at, "set exactly one of 'above' or 'below' "
             "(the line the value must not be projected to cross)"),
            (rule.above is not None or rule.below is not None, (*at[:-1], "above" if rule.above is not None
             else "below"), "a rule with 'predict' takes its line from predict.above/below; "
             "write a second rule for the current value"),
            (cardinality is Cardinality.HIGH, at, f"{rule.probe} measures short-lived subjects (connections, "
             "processes): there is no history to project; predict works on hosts, mounts, instances"),
            (raw.over / every < raw.min_samples, (*at, "over"), f"holds {raw.over / every:.3g} runs of every "
             f"{every:g}s; predict needs at least min_samples ({raw.min_samples}) in it"),
        )
        for failed, where, message in problems:
            if failed:
                self.problem(where, message)
                return None
        return Prediction(
            above=lines["above"], below=lines["below"], within=raw.within, over=raw.over,
            min_samples=raw.min_samples,
        )

    def _notify_policy(self, own: Mapping[str, Any] | None, section: NotifySection, at: KeyPath) -> NotifyPolicy | None:
        """The rule's ``notify:`` over ``notify.default``; every sink it names must exist.

        Shared (``share``): at 1,000 rules one policy per rule was 0.6 MiB for a single value.
        """
        merged = {**self._notify_default, **(own or {})}
        policy = self.validate(NotifyPolicy, merged, at)
        if policy is None:
            return None
        unknown = [name for name in policy.sinks or () if name not in section.sinks]
        if unknown:
            known = ", ".join(sorted(section.sinks)) or "none: add notify.sinks"
            self.problem((*at, "sinks"), f"unknown sink {unknown[0]!r} (known: {known})")
            return None
        return self.share(policy)

    def _target_ref(
        self,
        ref: str | None,
        kind: str | None,
        targets: Mapping[str, Mapping[str, Params]],
        at: KeyPath,
    ) -> str | None:
        if kind is None:
            if ref is not None:
                self.problem(at, "this probe runs on the local host and takes no target")
            return None
        named = targets.get(kind, {})
        if ref is None:
            if len(named) == 1:
                return next(iter(named))
            self.problem(at[:-1], f"missing required key 'target' (one of targets.{kind})")
            return None
        if (kind, ref) in self.broken_targets:
            return None
        if ref not in named:
            hint = _did_you_mean(ref, named) or f" (no targets.{kind} is configured)" * (not named)
            self.problem(at, f"unknown {kind} target {ref!r}{hint}")
            return None
        return ref

    def _thresholds(  # noqa: PLR0917 (one call site; the rule's parts as _rule has them)
        self, rule: _RawRule, unit: Unit, at: KeyPath, every: float, predict: Prediction | None, predicts: bool
    ) -> Thresholds | None:
        """The comparison; with ``predict``, its line is the one the projection is compared with."""
        parse = THRESHOLD_PARSERS[unit]
        values: dict[str, float | None] = {}
        ok = True
        if predicts:
            if predict is None:
                return None  # reported by _predict or the model
            values["above"], values["below"] = predict.above, predict.below
        for key in ("above", "below", "clear_above", "clear_below"):
            if key in values:
                continue
            raw_value = getattr(rule, key)
            if raw_value is None:
                values[key] = None
                continue
            try:
                values[key] = parse(raw_value)
            except ValueError as exc:
                self.problem((*at, key), str(exc))
                ok = False
        if not ok:
            return None
        if values["above"] is None and values["below"] is None:
            self.problem(at, "set 'above' or 'below' (the threshold)")
            return None
        checks: tuple[tuple[bool, str, str], ...] = (
            (values["clear_above"] is not None and values["above"] is None, "clear_above", "needs 'above'"),
            (values["clear_below"] is not None and values["below"] is None, "clear_below", "needs 'below'"),
            (_gt(values["clear_above"], values["above"]), "clear_above", "must not be greater than 'above'"),
            (_gt(values["below"], values["clear_below"]), "clear_below", "must not be less than 'below'"),
        )
        for failed, key, message in checks:
            if failed:
                self.problem((*at, key), message)
                ok = False
        if not ok:
            return None
        return Thresholds(
            above=values["above"],
            below=values["below"],
            clear_above=values["clear_above"],
            clear_below=values["clear_below"],
            for_=rule.for_,
            hold=rule.hold,
            for_slack=every * FOR_SLACK,
        )

    def _action(
        self,
        item: Mapping[str, Mapping[str, Any] | None],
        probe: str,
        rule_target: str | None,
        targets: Mapping[str, Mapping[str, Params]],
        at: KeyPath,
    ) -> ActionConfig | None:
        if len(item) != 1:
            self.problem(at, "each action is a mapping with exactly one key, the action kind")
            return None
        kind, body = next(iter(item.items()))
        spec = self.registry.actions.get(kind)
        if spec is None:
            self.problem((*at, kind), f"unknown action{_did_you_mean(kind, self.registry.actions)}")
            return None
        body = dict(body or {})
        target_ref = body.pop("target", None)
        if (
            target_ref is None
            and spec.target_kind is not None
            and (
                rule_target in targets.get(spec.target_kind, {})
                or (spec.target_kind, str(rule_target)) in self.broken_targets
            )
        ):
            target_ref = rule_target
        target = self._target_ref(target_ref, spec.target_kind, targets, (*at, kind, "target"))
        params = self.validate(spec.params, body, (*at, kind))
        if params is None or (spec.target_kind is not None and target is None):
            return None
        if not self._fits(kind, spec, params, probe, at):
            return None
        if isinstance(params, hazards.GuardsOwnPaths):
            problems = params.own_paths_problems(self.own)
            for key, problem in problems:
                self.problem((*at, kind, key), problem)
            if problems:
                return None
            params = params.protecting(self.own)
        settle = params.settle if params.settle is not None else spec.settle
        return ActionConfig(kind=kind, params=params, target=target, settle=settle)

    def _own_paths(self, state_dir: str) -> hazards.OwnPaths:
        """The daemon's own directories; a state_dir shared with the system or other software is refused."""
        own = hazards.OwnPaths(
            state_dir=os.path.abspath(state_dir), config_dir=os.path.dirname(os.path.abspath(self.path))
        )
        problem = hazards.state_dir_problem(own.state_dir, own.config_dir)
        if problem is not None:
            self.problem(("state_dir",), f"{problem} (it holds the database and the audit history)")
        return own

    def _availability_probes(self, probe: str) -> str:
        """The availability probes of ``probe``'s target kind (or all): what to use to fire on an outage."""
        kind = self.registry.probes[probe].target_kind
        names = sorted(name for name, spec in self.registry.probes.items() if spec.availability)
        same = [name for name in names if self.registry.probes[name].target_kind == kind]
        return ", ".join(same or names) or "none is registered"

    def _fits(self, kind: str, spec: ActionSpec, params: ActionParams, probe: str, at: KeyPath) -> bool:
        """The action can act on what the rule's probe reports (no postgres.terminate of ``cpu``)."""
        if spec.accepts_kind(self.registry.probes[probe].subjects, params):
            return True
        measured = self.registry.probes[probe].subjects
        fitting = sorted(name for name, p in self.registry.probes.items() if p.subjects in spec.accepts)
        hint = f"; probes it fits: {', '.join(fitting[:6])}{', ...' * (len(fitting) > 6)}"
        if spec.accepts_any_with is not None:
            hint += f"; or set {spec.accepts_any_with}: to name what it acts on"
        self.problem(
            (*at, kind),
            f"action {kind} acts on {describe_kinds(spec.accepts)}; probe {probe} measures "
            f"{describe_kinds(frozenset({measured}))}{hint}",
        )
        return False

    def _fleet_groups(
        self, fleet: FleetSection | None, rules: Mapping[str, Rule], names: set[str]
    ) -> dict[str, str]:
        """Each rule's fleet group; a rule may belong to one group only, and every name must exist."""
        if fleet is None:
            return {}
        self._fleet_files(fleet)
        owner: dict[str, str] = {}  # rule -> its group
        for group, settings in fleet.groups.items():
            at: KeyPath = ("fleet", "groups", group)
            for index, name in enumerate(settings.rules):
                if name not in names:
                    hint = _did_you_mean(name, sorted(names))
                    self.problem((*at, "rules", index), f"unknown rule {name!r}{hint}")
            for index, kind in enumerate(settings.actions):
                if kind not in self.registry.actions:
                    hint = _did_you_mean(kind, self.registry.actions)
                    self.problem((*at, "actions", index), f"unknown action kind {kind!r}{hint}")
            members = set(settings.rules) | {
                name for name, rule in rules.items() if any(a.kind in settings.actions for a in rule.actions)
            }
            for name in sorted(members & set(rules)):
                if name in owner:
                    self.problem(at, f"rule {name!r} is also in group {owner[name]!r}: a rule is in one fleet group")
                owner.setdefault(name, group)
        return {name: group for name, group in owner.items() if rules[name].actions}

    def _fleet_files(self, fleet: FleetSection) -> None:
        """TLS and password files must be readable now: a fleet budget that cannot connect fails closed."""
        coordinator = fleet.coordinator
        settings = coordinator.etcd if coordinator.etcd is not None else coordinator.redis
        at: KeyPath = ("fleet", "coordinator", coordinator.kind)
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(settings, key, None)
            if path is not None and not os.access(path, os.R_OK):
                self.problem((*at, key), f"cannot read {path}")
        password_file = getattr(settings, "password_file", None)
        password_env = getattr(settings, "password_env", None)
        try:
            resolve_secret(None, password_file, password_env, "password")
        except ValueError as exc:
            self.problem((*at, "password_file" if password_file else "password_env"), str(exc))

    def _check_dependencies(self, rules: Mapping[str, Rule], names: set[str]) -> None:
        """``depends_on`` names existing rules and never loops back: a cycle would wait for ever."""
        for name, rule in rules.items():
            for dep in rule.depends_on:
                if dep == name:
                    self.problem(("rules", name, "depends_on"), "a rule cannot depend on itself")
                elif dep not in names:
                    hint = _did_you_mean(dep, sorted(names))
                    self.problem(("rules", name, "depends_on"), f"unknown rule {dep!r}{hint}")
        for cycle in _cycles(rules):
            self.problem(("rules", cycle[0], "depends_on"), f"dependency cycle: {' -> '.join((*cycle, cycle[0]))}")


def _effective_timeout(own: float | None, default: float, every: float) -> tuple[float, str]:
    """A rule's probe timeout and where it came from.

    Without its own ``timeout`` a rule gets ``probe_timeout`` capped at its
    interval, so a run always ends before the next is due; a rule that sets
    ``timeout`` gets exactly that, even beyond its interval (a run that is
    still going makes the scheduler skip a beat, never overlap).
    """
    if own is not None:
        return own, "rule timeout"
    if default > every:
        return every, "probe_timeout capped at the interval"
    return default, "probe_timeout"


def _names(value: str | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([value] if isinstance(value, str) else value))


def _cycles(rules: Mapping[str, Rule]) -> list[tuple[str, ...]]:
    """Dependency cycles, each once, starting at its smallest name (iterative depth-first search).

    Iterative on purpose: a config may chain thousands of rules, and a
    recursive walk hit Python's recursion limit (and took seconds) there.
    """
    grey, black = 1, 2
    colour: dict[str, int] = {}
    found: dict[tuple[str, ...], None] = {}
    for root in rules:
        if root in colour:
            continue
        colour[root] = grey
        path = [root]
        stack = [iter(rules[root].depends_on)]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                colour[path.pop()] = black
            elif dep in rules and dep != path[-1]:  # self-dependency is reported on its own
                if colour.get(dep) == grey:
                    cycle = path[path.index(dep):]
                    first = cycle.index(min(cycle))
                    found.setdefault((*cycle[first:], *cycle[:first]), None)
                elif dep not in colour:
                    colour[dep] = grey
                    path.append(dep)
                    stack.append(iter(rules[dep].depends_on))
    return list(found)


def _file_and_line(main: Path) -> Callable[[str], tuple[bool, str, int]]:
    """Problems sorted by file (the main file first) and line."""
    prefix = f"{main}:"

    def key(problem: str) -> tuple[bool, str, int]:
        return (not problem.startswith(prefix), problem.split(":", 1)[0], _line_number(problem))

    return key


def _line_number(problem: str) -> int:
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def _gt(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a > b


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _did_you_mean(word: str, candidates: Mapping[str, Any] | Sequence[str]) -> str:
    import difflib  # noqa: PLC0415 (only a config with a typo needs it: 76 KiB of RSS otherwise, issue 17)

    names = list(candidates)
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if names and len(names) <= 12:
        return f" (expected one of: {', '.join(sorted(names))})"
    return ""


def _allowed_keys(model: type[Model], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` inside ``model``, for the did-you-mean hint."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, Model):
            fields = current.twin().model_fields  # the resolved annotations are the checking form's
            info = fields.get(str(part)) or next((f for f in fields.values() if f.alias == part), None)
            if info is None:
                return []
            current = _unwrap(info.annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, Model):
        return [spec.alias or field_name for field_name, spec in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Optional[Model] -> Model, so hints work inside optional sub-sections."""
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, Model):
            return arg
    return annotation
