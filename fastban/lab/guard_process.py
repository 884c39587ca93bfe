"""`fastban run` as a process in a lab network namespace (GuardProcess): its own settings file,
control socket, state file and log in a working directory; used by the demo, the tests and the
benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MAXRETRY, BANTIME = 5, 600     # the settings' defaults here (the demo narrates them)


class GuardProcess:
    """`fastban run` as a process in a network namespace, with its own settings and log."""

    def __init__(self, namespace, iface: str, workdir: Path, **settings):
        self.namespace, self.iface, self.workdir = namespace, iface, Path(workdir)
        self.config = self.workdir / "fastban.toml"
        self.socket = str(self.workdir / "control.sock")
        values = {"maxretry": MAXRETRY, "findtime": 600, "bantime": BANTIME,
                  "state_file": str(self.workdir / "state.msgpack"),
                  "control_socket": self.socket, **settings}
        self.config.write_text("".join(f"{key} = {json.dumps(value)}\n"
                                       for key, value in values.items()))
        self.log_path = self.workdir / "guard.log"
        self.process: subprocess.Popen | None = None

    def command(self, *args: str) -> list[str]:
        return self.namespace.nsenter([sys.executable, "-m", "fastban", *args])

    def start(self, *extra: str, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command("run", "--iface", self.iface, "--config", str(self.config), *extra),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fastban run exited with {self.process.returncode}:\n"
                                   f"{self.log_path.read_text()[-2000:]}")
            if self.cli("stats", check=False).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fastban run did not answer within {timeout} s")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs a fastban command against this guard's settings and socket."""
        result = subprocess.run(self.command(*args, "--config", str(self.config),
                                             "--iface", self.iface),
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"fastban {' '.join(args)}: exit {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result

    def json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def stop(self, signal_name: str = "TERM", timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        if signal_name == "KILL":
            self.process.kill()
        else:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def restore_settings(self, text: bytes, timeout: float = 20) -> None:
        """Writes the settings file back and has the guard reload it, as SIGHUP does."""
        reloads = self.log().count("settings reloaded")
        self.config.write_bytes(text)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log().count("settings reloaded") <= reloads:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the guard did not reload its settings within {timeout} s")
            time.sleep(0.1)

    def detach(self) -> None:
        """Stops the guard and removes its programs and pins, even if its settings are broken."""
        from fastban.dataplane import DEFAULT_PIN_ROOT, remove_pins

        self.stop()
        if self.cli("detach", check=False).returncode != 0:
            remove_pins(os.path.join(DEFAULT_PIN_ROOT, self.iface))
