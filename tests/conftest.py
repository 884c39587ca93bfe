import ipaddress
import os
import shutil
import time
from pathlib import Path

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


# Importing one of these is touching SIP parsing or a module compiled from a pure-Python
# source: the parser itself, the HEP decoder (compiled too, with a pure-Python twin), the
# failure rules (fastban.rules, compiled as fastban._rules), or `fastban run` started as a
# child process (it inherits FASTBAN_PURE_PYTHON).
PARSING_MODULES = {"fastban.sip", "fastban.sip_pure", "fastban._sipparser",
                   "fastban.hep", "fastban.hep_pure", "fastban._hepparser",
                   "fastban.rules", "fastban._rules",
                   "fastban.lab.guard_process"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "parses: touches SIP parsing (set on every test of a module whose imports "
        "reach it); `make test` runs these again on the pure-Python parser")


def parsing_test_files() -> set[str]:
    """The test files whose imports, followed through fastban and through this folder's helper
    modules (labwait, traces, ...), reach SIP parsing."""
    import ast

    import importgraph

    here = Path(__file__).parent
    helpers = {p.stem: p for p in here.glob("*.py")
               if not p.name.startswith("test_") and p.stem != "conftest"}
    graph, modules = importgraph.product_graph(), importgraph.product_modules()

    def fastban_imports(path: Path, seen: set) -> set[str]:
        found = importgraph.imports_of(path, modules)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                if name in helpers and name not in seen:
                    seen.add(name)
                    found |= fastban_imports(helpers[name], seen)
        return found

    return {path.name for path in here.glob("test_*.py")
            if importgraph.reachable(fastban_imports(path, set()), graph) & PARSING_MODULES}


def pytest_collection_modifyitems(config, items):
    parsing = parsing_test_files()
    for item in items:
        if item.path.name in parsing:
            item.add_marker(pytest.mark.parses)


def pytest_terminal_summary(terminalreporter):
    """One line that says which parser this run used and how many tests ran on it."""
    from fastban import sip
    stats = terminalreporter.stats
    counts = {key: len(stats.get(key, [])) for key in ("passed", "failed", "error", "skipped")}
    ran = counts["passed"] + counts["failed"] + counts["error"]
    terminalreporter.write_line(
        f"fastban: {ran} tests ran with the {sip.IMPLEMENTATION} parser "
        f"({counts['passed']} passed, {counts['failed'] + counts['error']} failed, "
        f"{counts['skipped']} skipped)")


def wait_for(condition, timeout=15.0, what="it"):
    """condition()'s first true value, polled for up to timeout seconds; else AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def kernel_holds(lab, address) -> bool:
    """Whether the kernel's ban map of the lab's server holds the address (read from the
    pinned maps)."""
    from fastban.dataplane import DataPlane

    dataplane = DataPlane.open_pinned(lab.server_iface)
    try:
        return dataplane.ban_of(ipaddress.ip_address(address)) is not None
    finally:
        dataplane.close()
