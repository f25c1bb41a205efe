"""A private dockerd (own socket, data root, exec root) that a test may stop, restart and put behind TLS.

The shared engine serves other test sessions, so tests that take an engine
down use one of these. It runs without a bridge network (containers use
``network_mode=none``) and is always stopped, with its containers, at teardown.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import free_port  # noqa: F401  (re-exported for this package)
from tests.integration.docker.dockertest import wait_until
from tests.support.dockerd import ensure_busybox_image


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA, a server cert for 127.0.0.1 and a client cert, as dockerd --tlsverify wants them."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    def issue(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
              *, ca: bool = False, server: bool = False) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "watchdogd test CA")])
    ca_cert = issue("watchdogd test CA", ca_key, ca_name, ca_key, ca=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                     directory / "client.pem", directory / "client-key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, server in ((files.server_cert, files.server_key, True),
                                        (files.client_cert, files.client_key, False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue("127.0.0.1" if server else "watchdogd", key, ca_name, ca_key, server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key_path, key)
    return files


class PrivateEngine:
    def __init__(self, tls: TlsFiles | None = None) -> None:
        # Short paths: containerd's sockets live under the exec root and unix socket paths max out at 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="wdd-", dir="/tmp"))
        self.socket = self.root / "d.sock"
        self.url = f"unix://{self.socket}"
        self.tls = tls
        self.tcp_url = f"tcp://127.0.0.1:{free_port()}" if tls is not None else None
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [
            "dockerd",
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "x"),
            "--pidfile", str(self.root / "d.pid"),
            "--bridge=none", "--iptables=false", "--ip-masq=false",
            "--cgroup-parent", f"/{self.root.name}",
            "-H", self.url,
        ]
        if self.tls is not None and self.tcp_url is not None:
            argv += ["-H", self.tcp_url, "--tlsverify", f"--tlscacert={self.tls.ca}",
                     f"--tlscert={self.tls.server_cert}", f"--tlskey={self.tls.server_key}"]
        return argv

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            wait_until(self._answers, timeout=60, what=f"a private dockerd on {self.url}")
        except AssertionError as exc:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise AssertionError(f"{exc}\n--- {self.log} ---\n{tail}") from None

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"private dockerd exited with {self.proc.returncode}")
        try:
            client = docker.APIClient(base_url=self.url, version="auto", timeout=2)
        except docker.errors.DockerException:
            return False
        client.close()
        return True

    def api(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, version="auto", timeout=60)

    def load_busybox(self) -> str:
        return ensure_busybox_image(host=self.url)

    def stop(self) -> None:
        """SIGTERM (dockerd stops its containers and containerd), SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        wait_until(lambda: not self.socket.exists(), timeout=10, what="the old socket to go away")
        self.start()

    def close(self) -> None:
        self.stop()
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            point = mount.split()[1]
            if point.startswith(str(self.root)):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def started(tls: TlsFiles | None = None) -> PrivateEngine:
    engine = PrivateEngine(tls)
    try:
        engine.start()
        engine.load_busybox()
    except BaseException:
        engine.close()
        raise
    return engine
