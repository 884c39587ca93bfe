"""The shape of the code: short modules, no import circle, the lab apart from the product, and
the parser-mode split of `make test` following the imports."""

import pytest

import importgraph
from conftest import PARSING_MODULES, parsing_test_files

MAX_LINES = 500
# Modules allowed past MAX_LINES, with why they read better whole, and the most they may grow to.
LONG_MODULES = {
    "fastban/rules.py": (620, "one state machine over tables every method shares; its head is "
                              "the detection model the code implements, its class bodies the C "
                              "types of its compiled twin"),
}


@pytest.fixture(scope="module")
def graph():
    return importgraph.product_graph()


def test_no_module_is_over_about_500_lines():
    too_long = {}
    for name, path in importgraph.product_modules().items():
        relative = str(path.relative_to(importgraph.ROOT))
        if path.suffix != ".py":
            continue
        lines = len(path.read_text().splitlines())
        limit = LONG_MODULES.get(relative, (MAX_LINES, ""))[0]
        if lines > limit:
            too_long[relative] = lines
    assert too_long == {}
    for relative, (limit, reason) in LONG_MODULES.items():
        lines = len((importgraph.ROOT / relative).read_text().splitlines())
        assert MAX_LINES < lines <= limit and reason, (relative, "no longer needs its exception")


def test_the_graph_is_read_from_the_sources(graph):
    assert {"fastban.detection", "fastban.dataplane", "fastban.guard_stats", "fastban.state"} <= \
        graph["fastban.guard"]
    assert "fastban.sip" in graph["fastban.guard_stats"]
    assert graph["fastban.dataplane.program"] >= {"fastban.abi", "fastban.dataplane.maps"}
    assert "fastban.sip_pure" in graph["fastban.sip"]          # under if/try
    assert "fastban.service" in graph["fastban.admin"]         # in a function
    assert "fastban.lab.siplab" not in graph["fastban.lab.office"]   # TYPE_CHECKING only


def test_cycles_finds_a_circle():
    assert importgraph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]]
    assert importgraph.cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle(graph):
    assert importgraph.cycles(graph) == []


def test_no_module_of_the_product_imports_the_lab(graph):
    product = [name for name in graph if not name.startswith("fastban.lab")]
    assert "fastban.cli" in product and "fastban.service" in product
    for name in product:
        reached = importgraph.reachable({name}, graph)
        assert not {m for m in reached if m.startswith("fastban.lab")}, name


def test_the_pure_python_run_covers_the_tests_that_parse():
    parsing = parsing_test_files()
    # the parser itself, the paths through it, the compiled rules (the settings build theirs),
    # and `fastban run` started by the lab
    assert {"test_sip_parser.py", "test_streams.py", "test_replay.py", "test_guard.py",
            "test_live_detection.py", "test_end_to_end.py", "test_offline.py",
            "test_rules.py", "test_config.py"} <= parsing
    # the data plane decodes packets, not SIP
    assert not {"test_dataplane.py", "test_abi.py", "test_state.py", "test_packets.py"} & parsing
    assert "fastban.sip" in PARSING_MODULES
