"""The web page's password: stored only as a scrypt hash (hashlib), in a root-only file.

A stored hash reads ``scrypt$N$r$p$salt$key`` (salt and key in base64), so the cost can be
raised later and old hashes still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from fastban.web.files import write_atomically

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1     # 32 MiB and about 0.1 s per try
KEY_BYTES, SALT_BYTES = 32, 16
MIN_LENGTH = 10
MAX_LENGTH = 1024


class PasswordError(ValueError):
    pass


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES,
                          maxmem=2 * 128 * r * (n + p + 2))


def hash_password(password: str) -> str:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordError(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters, "
                            f"got {len(password)}")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(key).decode()])


def parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.strip().split("$")
    try:
        kind, n, r, p, salt, key = parts
        n, r, p = int(n), int(r), int(p)
        salt, key = base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)
    except ValueError:
        raise PasswordError("not a fastban password hash (scrypt$N$r$p$salt$key)") from None
    if kind != "scrypt" or n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 \
            or n > 1 << 20 or not salt or len(key) != KEY_BYTES:
        raise PasswordError("not a fastban password hash (scrypt$N$r$p$salt$key)")
    return n, r, p, salt, key


def verify(password: str, stored: str) -> bool:
    n, r, p, salt, key = parse(stored)
    if len(password) > MAX_LENGTH:
        return False
    return hmac.compare_digest(_derive(password, salt, n, r, p), key)


def read_hash(path: str) -> str:
    """The stored hash, or PasswordError saying how to set one."""
    try:
        with open(path, encoding="ascii") as source:
            stored = source.read().strip()
    except FileNotFoundError:
        raise PasswordError(f"no web password is set ({path} does not exist): set one with "
                            "`fastban web-password`") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PasswordError(f"cannot read the web password file {path}: {error}") from None
    parse(stored)
    return stored


def write_hash(path: str, stored: str) -> None:
    """Writes the hash root-only, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    write_atomically(path, stored + "\n", mode=0o600)
