"""Builds the Cython SIP parser; fastban falls back to pure Python when it is absent."""
import os

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pure-Python install: the fallback parser serves
    ext_modules = []
else:
    ext_modules = cythonize(
        [Extension("fastban._sipparser", ["ext/sipparser.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ) if os.path.exists("ext/sipparser.pyx") else []

setup(ext_modules=ext_modules)
