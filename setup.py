"""Builds the Cython SIP parser, HEP decoder and capture ring reader (fastban falls back to pure
Python when they are absent) and ships the BPF sources inside the package, so an installed wheel
compiles the same programs."""
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

BPF_SOURCES = sorted(p.name for p in Path("bpf").iterdir() if p.suffix in (".c", ".h"))


class BuildPyWithBpf(build_py):
    """Copies bpf/*.h and *.c to fastban/bpf/ in the build (where fastban.abi looks second)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "fastban" / "bpf"
        self.mkpath(str(target))
        for name in BPF_SOURCES:
            self.copy_file(os.path.join("bpf", name), str(target / name))


try:
    from Cython.Build import cythonize
except ImportError:  # pure-Python install: the fallback parser serves
    ext_modules = []
else:
    # The hot path's pure-Python-mode modules, each compiled as fastban._<name> (the source
    # picks its compiled twin when it is built, see fastban/_cython_shim.py).
    PURE_MODE = ("rules",)
    ext_modules = cythonize(
        [Extension(f"fastban._{name}", [f"ext/{name}.pyx"], extra_compile_args=["-O3"],
                   include_dirs=["ext", "bpf"])
         for name in ("sipparser", "hepparser", "ringreader")
         if os.path.exists(f"ext/{name}.pyx")] +
        [Extension(f"fastban._{name}", [f"fastban/{name}.py"], extra_compile_args=["-O3"])
         for name in PURE_MODE],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        build_dir="build/cython",
    )

setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithBpf})
