"""The build ships what an installed fastban needs outside this checkout: the BPF sources,
the example settings and unit, and the lab files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastban import dataplane

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    target = tmp_path_factory.mktemp("build") / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(target)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return target


def test_the_bpf_sources_and_data_files_are_in_the_package(built):
    package = built / "fastban"
    for name in ("bpf/fastban.h", "bpf/xdp_drop.c", "bpf/tc_capture.c", "data/fastban.toml",
                 "data/fastban@.service", "lab/kamailio.cfg.tmpl", "lab/attacker_guess.xml"):
        assert (package / name).is_file(), name
    for name in ("fastban.h", "xdp_drop.c", "tc_capture.c"):
        assert (package / "bpf" / name).read_bytes() == (ROOT / "bpf" / name).read_bytes()


def test_an_installed_package_compiles_from_its_own_copy(built, tmp_path):
    """Imported from the build (not this checkout), the data plane finds fastban/bpf/ inside
    the package and assembles the same program text."""
    probe = ("import fastban.dataplane as d; print(d._bpf_dir()); "
             "import sys; sys.stdout.write(d.program_source())")
    env = {**os.environ, "PYTHONPATH": str(built)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    where, _, source = out.partition("\n")
    assert Path(where) == built / "fastban" / "bpf"
    assert source == dataplane.program_source()
