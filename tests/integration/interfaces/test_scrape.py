"""/metrics as real consumers see it: Prometheus scraping, promtool linting, node_exporter's textfile collector."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.integration.interfaces.conftest import DaemonFactory
from tests.integration.interfaces.support import Service, free_port, http_get, wait_until

pytestmark = pytest.mark.integration

FIRING = """
    interval: 1s
    listen: 127.0.0.1:{port}
    rules:
      mem: {{probe: host.memory, above: 0}}
      disk: {{probe: host.disk, params: {{mountpoints: ["/"]}}, above: 100}}
"""


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: apt-get install {'prometheus' if 'prom' in name else 'prometheus-node-exporter'}"
    return path


def test_real_prometheus_sees_the_rule_firing(start_daemon: DaemonFactory, short_dir: Path) -> None:
    port = free_port()
    daemon = start_daemon(FIRING.format(port=port))
    daemon.wait_for_log("firing", rule="mem")
    prom_port = free_port()
    config = short_dir / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "watchdogd", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    argv = [
        binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={short_dir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
    ]
    with Service(argv, short_dir / "prometheus.log") as prometheus:
        query = urllib.parse.urlencode({"query": 'watchdogd_rule_firing{rule="mem"}'})

        def firing() -> str | None:
            assert prometheus.alive(), prometheus.output()
            status, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?{query}")
            if status != 200:
                return None
            result = json.loads(body)["data"]["result"]
            return result[0]["value"][1] if result else None

        assert wait_until(firing, 60, "Prometheus to scrape watchdogd_rule_firing") == "1"
        up = urllib.parse.urlencode({"query": 'up{job="watchdogd"}'})
        _, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?{up}")
        assert json.loads(body)["data"]["result"][0]["value"][1] == "1"


def test_promtool_accepts_the_live_metrics(start_daemon: DaemonFactory) -> None:
    port = free_port()
    daemon = start_daemon(FIRING.format(port=port) + """
      load: {probe: host.load, above: 1000}
      backup: {probe: host.file_age, params: {path: /nonexistent/*.gz}, above: 1d}
    """)
    daemon.wait_for_log("firing", rule="backup")
    wait_until(lambda: b"watchdogd_reading_seconds" in http_get(f"http://127.0.0.1:{port}/metrics")[1], 10,
               "all rules to have run")
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert b'watchdogd_reading_seconds{rule="backup",subject="/nonexistent/*.gz"} +Inf' in body
    done = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0 and not done.stdout and not done.stderr, done.stdout + done.stderr
    status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200 and body.startswith(b"ok: 4 rules: ") and body.endswith(b" ok\n"), body


def test_node_exporter_textfile_collector_reads_the_file(start_daemon: DaemonFactory, short_dir: Path) -> None:
    textdir = short_dir / "textfile"
    textdir.mkdir()
    daemon = start_daemon(f"""
        interval: 1s
        textfile_dir: {textdir}
        rules:
          mem: {{probe: host.memory, above: 0}}
        """)
    daemon.wait_for_log("firing", rule="mem")
    wait_until(lambda: b'watchdogd_rule_firing{rule="mem",severity="warning"} 1.0'
               in (textdir / "watchdogd.prom").read_bytes() if (textdir / "watchdogd.prom").exists() else False,
               10, "the textfile to show the rule firing")
    assert [p.name for p in textdir.iterdir()] == ["watchdogd.prom"]  # no temp file left behind
    assert (textdir / "watchdogd.prom").stat().st_mode & 0o777 == 0o644
    port = free_port()
    argv = [
        binary("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{port}",
        "--collector.disable-defaults", "--collector.textfile", f"--collector.textfile.directory={textdir}",
    ]
    with Service(argv, short_dir / "node_exporter.log") as node_exporter:
        def scraped() -> bytes:
            assert node_exporter.alive(), node_exporter.output()
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            return body if status == 200 else b""

        body = wait_until(scraped, 20, "node_exporter to answer")
        assert b'watchdogd_rule_firing{rule="mem",severity="warning"} 1' in body
        assert b"node_textfile_scrape_error 0" in body
    daemon.stop()
    assert "watchdogd_rule_firing" in (textdir / "watchdogd.prom").read_text()  # the final state stays
