"""Files the web process rewrites (the settings file, the password hash): all at once, so that
a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import stat
import tempfile


def write_atomically(path, text: str, mode: int | None = None) -> None:
    """Replace the file at ``path`` by ``text`` all at once: a temporary file in the same
    folder, synced, with the original's permission bits (and owner, as root) or ``mode``,
    then renamed over it.  On error the original is untouched and the temporary file
    removed."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    data = text.encode("utf-8")
    try:
        original = os.stat(path)
    except FileNotFoundError:
        original = None  # a new file keeps mkstemp's 0600
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            elif original is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(original.st_mode))
                if os.geteuid() == 0:
                    os.fchown(f.fileno(), original.st_uid, original.st_gid)
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable, where the file system can (the file is in place)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
