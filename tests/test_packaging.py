"""The build ships what an installed fastban needs outside this checkout: the BPF sources,
the example settings and unit, the lab files and the web page."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastban.dataplane import program

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    target = tmp_path_factory.mktemp("build") / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(target)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return target


def test_the_bpf_sources_and_data_files_are_in_the_package(built):
    package = built / "fastban"
    for name in ("data/fastban.toml", "data/fastban@.service", "data/fastban-web.service",
                 "lab/kamailio.cfg.tmpl", "lab/attacker_guess.xml", "dataplane/program.py",
                 "lab/siplab.py", "web/app.py", "web/static/index.html", "web/static/login.html",
                 "web/static/app.js", "web/static/style.css"):
        assert (package / name).is_file(), name
    sources = sorted(p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h"))
    assert {"abi.h", "walk.h", "fastban.h", "xdp_drop.c", "tc_capture.c"} <= set(sources)
    assert sorted(p.name for p in (package / "bpf").iterdir()) == sources
    for name in sources:
        assert (package / "bpf" / name).read_bytes() == (ROOT / "bpf" / name).read_bytes()


def test_an_installed_package_compiles_from_its_own_copy(built, tmp_path):
    """Imported from the build (not this checkout), the data plane finds fastban/bpf/ inside
    the package and assembles the same program text."""
    probe = ("import fastban.abi, fastban.dataplane.program as p; print(fastban.abi.bpf_dir()); "
             "import sys; sys.stdout.write(p.program_source())")
    env = {**os.environ, "PYTHONPATH": str(built)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    where, _, source = out.partition("\n")
    assert Path(where) == built / "fastban" / "bpf"
    assert source == program.program_source()
