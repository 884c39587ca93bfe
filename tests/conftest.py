import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _kernel_unavailable_reason():
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC (Debian's python3-bpfcc) is not importable"
    if not os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        return "no kernel headers at /lib/modules/$(uname -r)/build (run: make host)"
    if not shutil.which("ip"):
        return "iproute2 is missing"
    return None


def require_tool(name):
    """Skips (or fails in CI) when an external program the test drives is missing."""
    if shutil.which(name) is None:
        message = f"{name} is not installed (run: make host)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def kernel():
    """Root, BCC and kernel headers: in CI a missing piece fails the test, elsewhere it skips."""
    reason = _kernel_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"kernel test cannot run in CI: {reason}")
        pytest.skip(reason)
