"""`fastban web` as a process (WebProcess), beside a lab's GuardProcess: in the host's network
namespace on loopback (where a browser driven by the tests reaches it) or in a lab namespace.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from fastban.config import parse_listen


class WebProcess:
    def __init__(self, guard, listen: str, *extra: str, namespace=None, name: str = "web"):
        self.guard, self.listen, self.extra, self.namespace = guard, listen, extra, namespace
        self.log_path = Path(guard.workdir) / f"{name}.log"
        self.process: subprocess.Popen | None = None
        host, port = parse_listen(listen)
        self.url = f"{'https' if '--tls-cert' in extra else 'http'}://" \
                   f"{f'[{host}]' if ':' in host else host}:{port}"

    def command(self, *args: str) -> list[str]:
        line = [sys.executable, "-m", "fastban", *args]
        return self.namespace.nsenter(line) if self.namespace else line

    def set_password(self, password: str) -> None:
        subprocess.run(self.command("web-password", "--config", str(self.guard.config),
                                    "--stdin"), input=password + "\n", text=True, check=True,
                       capture_output=True, timeout=60)

    def start(self, timeout: float = 30) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command("web", "--config", str(self.guard.config), "--listen", self.listen,
                         *self.extra), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fastban web exited with {self.process.returncode}:\n"
                                   f"{self.log()[-2000:]}")
            if "serving the page" in self.log():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fastban web did not start within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
