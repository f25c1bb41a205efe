"""The Docker target's config, its error messages, and the import-on-first-use promise."""

from __future__ import annotations

import errno
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import urllib3
from pydantic import ValidationError

from watchdogd.config import ConfigError, parse_config
from watchdogd.families.docker.actions import PruneParams, RestartParams
from watchdogd.families.docker.target import DockerTargetParams, TlsParams, _transport_reason, connect


def test_defaults() -> None:
    params = DockerTargetParams()
    assert (params.url, params.tls, params.timeout) == ("unix:///var/run/docker.sock", None, 10.0)
    assert DockerTargetParams(url="tcp://10.0.0.5:2376", timeout="3s").timeout == 3.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"url": "unix://relative.sock"}, "absolute path"),
        ({"url": "tcp://host"}, "host and port"),
        ({"url": "ssh://root@host"}, "must start with unix:// or tcp://"),
        ({"url": "unix:///var/run/docker.sock", "tls": {}}, "tls applies only to a tcp:// url"),
        ({"timeout": "0s"}, "greater than 0"),
        ({"tls": {"cert_file": "/etc/hostname"}, "url": "tcp://h:1"}, "set both cert_file and key_file"),
        ({"tls": {"ca_file": "ca.pem"}, "url": "tcp://h:1"}, "absolute path"),
        ({"tls": {"ca_file": "/nonexistent/ca.pem"}, "url": "tcp://h:1"}, "cannot read /nonexistent/ca.pem"),
    ],
)
def test_bad_params(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DockerTargetParams(**params)  # type: ignore[arg-type]


def test_tls_pair() -> None:
    tls = TlsParams(ca_file="/etc/hostname", cert_file="/etc/hostname", key_file="/etc/hostname", verify=True)
    assert DockerTargetParams(url="tcp://127.0.0.1:2376", tls=tls).tls == tls


def test_action_params() -> None:
    with pytest.raises(ValidationError, match="stop_timeout .* must be shorter than the action's timeout"):
        RestartParams(stop_timeout="2m", timeout="1m")
    assert RestartParams(stop_timeout="30s").stop_timeout == 30.0
    with pytest.raises(ValidationError, match="nothing to prune"):
        PruneParams(containers=False, images=False, build_cache=False)
    assert PruneParams().older_than == 86400.0
    assert PruneParams().exclude_labels == ["watchdogd.enable=false"]


def _wrapped(cause: BaseException) -> requests.ConnectionError:
    """The chain requests/urllib3 really produce: ConnectionError(ProtocolError(..., OSError))."""
    inner = urllib3.exceptions.ProtocolError("Connection aborted.", cause)
    try:
        raise requests.ConnectionError(inner)
    except requests.ConnectionError as exc:
        exc.__context__ = inner
        return exc


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), "socket /run/d.sock does not exist (is dockerd running?)"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection refused"),
        (PermissionError(errno.EACCES, "denied"), "permission denied on /run/d.sock"),
        (TimeoutError("timed out"), "no answer within 5s"),
    ],
)
def test_transport_reasons(cause: BaseException, reason: str) -> None:
    text = _transport_reason(_wrapped(cause), "unix:///run/d.sock", 5.0)
    assert text is not None and text.startswith(reason)


def test_an_api_error_is_not_a_transport_error() -> None:
    assert _transport_reason(ValueError("no such container"), "unix:///run/d.sock", 5.0) is None


def test_connect_neither_blocks_nor_raises(tmp_path: Path) -> None:
    started = time.monotonic()
    engine = connect(DockerTargetParams(url="tcp://192.0.2.1:2376", timeout=30))  # TEST-NET: never answers
    engine2 = connect(DockerTargetParams(url=f"unix://{tmp_path}/none.sock"))
    assert time.monotonic() - started < 0.5
    engine.close()
    engine2.close()


def test_the_sdk_is_imported_only_when_a_docker_target_is_connected(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "targets: {docker: {local: {}}}\n"
        "rules: {c: {probe: docker.containers, above: 0s, actions: [{docker.restart: {}}]}}\n"
    )
    code = (
        "import sys; from pathlib import Path; from watchdogd.config import load_config;"
        f"load_config(Path({str(config)!r}), check_permissions=False);"
        "print('docker' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    text = """\
targets:
  docker:
    local: {url: "http://x:1", timout: 5s}
rules:
  crashed:
    probe: docker.containers
    params: {conditions: [exploded], namez: ["a"]}
    above: 0s
    actions:
      - docker.restart: {stop_timeout: 2m}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "w.yaml")
    problems = info.value.problems
    assert all("\n" not in p for p in problems)
    joined = "\n".join(problems)
    assert "targets.docker.local.url: url must start with unix:// or tcp://" in joined
    assert "targets.docker.local.timout: unknown key; did you mean 'timeout'?" in joined
    assert "rules.crashed.params.conditions[0]:" in joined
    assert "rules.crashed.params.namez: unknown key; did you mean 'names'?" in joined


def test_a_good_config_resolves_the_target(tmp_path: Path) -> None:
    text = """\
targets:
  docker:
    local: {}
rules:
  crashed:
    probe: docker.containers
    params: {labels: ["watchdogd.enable=true"]}
    above: 0s
    cooldown: 10s
    max_cooldown: 5m
    actions:
      - docker.start: {}
      - docker.restart: {stop_timeout: 20s}
"""
    rule = parse_config(text, tmp_path / "w.yaml").rules["crashed"]
    assert rule.target == "local"
    assert [a.target for a in rule.actions] == ["local", "local"]
    assert rule.thresholds.above == 0.0
