"""Debian's redis-server for the fleet's tests, demo and benchmarks: on a private Unix socket
(mode 0700, no TCP port), with a password, its data in a working directory (an append-only
file, so that a server killed and started again has its keys back), stopped at the end.
Users of its ACL file (each edge its own, limited to some keys) outlive a restart too.

    with RedisServer(workdir, users={"edge-a": ("secret", "fastban:lab:*")}) as redis:
        settings["fleet_redis"] = redis.user_url("edge-a", "secret")
        redis.kill(); ...; redis.start()
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path


class RedisServerError(RuntimeError):
    pass


class RedisServer:
    def __init__(self, workdir: Path, password: str | None = None,
                 users: dict[str, tuple[str, str]] | None = None):
        if shutil.which("redis-server") is None:
            raise RedisServerError("redis-server is not installed (run: make host)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = self.workdir / "redis.sock"
        self.password = password or secrets.token_hex(16)
        self.log_path = self.workdir / "redis.log"
        self.acl_file = self.workdir / "users.acl"
        lines = [f"user default on >{self.password} ~* &* +@all"]
        for name, (secret, keys) in (users or {}).items():
            lines.append(f"user {name} on >{secret} ~{keys} resetchannels +@all -@dangerous")
        self.acl_file.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://:{self.password}@{self.socket}"

    def user_url(self, user: str, password: str) -> str:
        return f"unix://{user}:{password}@{self.socket}"

    def client(self):
        import redis
        return redis.Redis(unix_socket_path=str(self.socket), password=self.password)

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--aclfile", str(self.acl_file), "--dir",
             str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--logfile", ""],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self.process.returncode}:\n"
                                       f"{self.log_path.read_text()[-2000:]}")
            try:
                if self.client().ping():
                    return
            except Exception:
                time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer within {timeout} s")

    def kill(self) -> None:
        """SIGKILL, as a crash: the edges lose their connection at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
