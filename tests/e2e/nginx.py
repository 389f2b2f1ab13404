"""The documented nginx configuration (``server/deploy/nginx.conf``), run for real.

:class:`NginxProxy` starts the distribution's ``nginx`` in the foreground under a
temporary prefix, on a free loopback port, with the documented site file in front
of one test server. Only the values a test machine must differ in are replaced
(listen address, certificate, upstream port), each checked to occur exactly once,
so an edit to the documented file either still works here or fails loudly: the
README's config and the tested one cannot drift apart.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

#: The config the README documents.
DOCUMENTED_CONFIG: Final = Path(__file__).resolve().parents[2] / "server" / "deploy" / "nginx.conf"
START_TIMEOUT: Final = 10.0
#: The wrapper around the site file: what /etc/nginx/nginx.conf provides on a host.
_MAIN_CONFIG: Final = """\
daemon off;
master_process on;
worker_processes 1;
user {user};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


class NginxUnavailable(RuntimeError):
    """nginx (or openssl, for the test certificate) is not installed."""


class NginxStartError(RuntimeError):
    """nginx is installed but did not start with the config (a failure, not a skip)."""


def find_nginx() -> str:
    """The nginx binary; :class:`NginxUnavailable` naming the package when absent."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(path)),
        None,
    )
    if found is None:
        raise NginxUnavailable("nginx is not installed (Debian: apt-get install nginx)")
    if shutil.which("openssl") is None:
        raise NginxUnavailable("openssl is not installed (needed for the test certificate)")
    return found


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced; ``ValueError`` unless it occurs exactly once."""
    count = text.count(old)
    if count != 1:
        raise ValueError(f"{DOCUMENTED_CONFIG}: expected {old!r} once, found it {count} times")
    return text.replace(old, new)


def site_config(
    *, port: int, upstream_port: int, certificate: Path, key: Path, max_body: int | None = None
) -> str:
    """The documented site file with this machine's port, certificate and upstream (and,
    given ``max_body``, a smaller body limit than the documented one)."""
    text = DOCUMENTED_CONFIG.read_text(encoding="utf-8")
    if max_body is not None:
        text = replace_once(
            text, "client_max_body_size 6000000;", f"client_max_body_size {max_body};"
        )
        text = replace_once(
            text,
            "client_max_body_size 6000000 bytes",
            f"client_max_body_size {max_body} bytes",
        )
    text = replace_once(text, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    text = replace_once(text, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    text = replace_once(
        text,
        "ssl_certificate /etc/ssl/certs/dotflow.example.com.pem;",
        f"ssl_certificate {certificate};",
    )
    return replace_once(
        text,
        "ssl_certificate_key /etc/ssl/private/dotflow.example.com.key;",
        f"ssl_certificate_key {key};",
    )


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A one-day certificate for 127.0.0.1 (its own CA bundle) and its key."""
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return certificate, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NginxProxy:
    """A foreground nginx running the documented config in front of ``upstream_port``."""

    def __init__(
        self, binary: str, prefix: Path, upstream_port: int, max_body: int | None = None
    ) -> None:
        self.binary = binary
        self.prefix = prefix
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        self.certificate, key = self_signed_certificate(prefix)
        self.site = prefix / "dotflow.conf"
        self.site.write_text(
            site_config(
                port=self.port,
                upstream_port=upstream_port,
                certificate=self.certificate,
                key=key,
                max_body=max_body,
            )
        )
        self.config = prefix / "nginx.conf"
        self.config.write_text(
            _MAIN_CONFIG.format(user=getpass.getuser(), prefix=prefix, site=self.site)
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The runners' ``SERVER_BASE_URL`` through the proxy."""
        return f"https://127.0.0.1:{self.port}/api/v1"

    def command(self, *options: str) -> list[str]:
        error_log = str(self.prefix / "error.log")
        return [self.binary, "-p", str(self.prefix), "-c", str(self.config), "-e", error_log,
                *options]  # fmt: skip

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the config."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        """Start nginx and wait until it accepts connections."""
        with (self.prefix / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NginxStartError(f"nginx did not start: {self.error_log()[-800:]}")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def stop(self) -> None:
        """SIGQUIT (graceful) the master process, SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
