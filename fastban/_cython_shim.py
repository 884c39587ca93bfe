"""What fastban's pure-Python-mode modules use of ``cython`` when Cython is not installed: the
decorators do nothing and the C types are the Python ones, so the plain source runs as is.

Also ``compiled_twin``: the compiled build of such a module, unless FASTBAN_PURE_PYTHON is set.
"""

import importlib
import os

compiled = False

int = int  # noqa: A001
longlong = int
double = float
bint = bool
Py_ssize_t = int
void = None


def cclass(cls):
    return cls


no_gc = cclass


def cfunc(function):
    return function


inline = cfunc


def locals(**types):  # noqa: A001
    return cfunc


def declare(kind=None, value=None, **_):
    return value


def pure_python_requested() -> bool:
    return os.environ.get("FASTBAN_PURE_PYTHON", "") not in ("", "0")


def compiled_twin(name: str):
    """The extension module ``name`` (e.g. fastban._rules, built by setup.py from
    fastban/rules.py), or None when it is not built or FASTBAN_PURE_PYTHON is set."""
    if pure_python_requested():
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
