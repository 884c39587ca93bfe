"""The kernel ABI as user space sees it: read from bpf/abi.h, the one source of it.

Pure: it reads C text and builds ctypes types; the data plane (fastban.dataplane) uses it to
talk to the kernel, fastban.headerscan and fastban.packets for the constants they share.

bpf/abi.h holds every struct and constant the BPF programs share with user space; the programs
include it, and this module reads it (no copy is kept here): ``ABI.constants["FB_CNT_PASSED"]``,
``ABI.struct("fb_capture_meta")`` (a ctypes.Structure laid out as C lays it out on this
machine), and ``ABI.maps``, the maps the programs declare (read from their
``BPF_TABLE_PINNED(...)`` lines: kind, key and value types, entries, pin name).

The reader understands the subset abi.h is written in, and nothing else there: C comments,
the include guard, ``#define NAME <integer expression>`` (decimal or hex literals, earlier
names, ``+ - * / << >> | & ~`` and parentheses) and ``struct NAME { TYPE FIELD[N]; ... };`` with
the fixed-width types and earlier structs. Anything else is an AbiError naming the line.

What could still disagree is how the compiler lays a struct out: ``verify_compiled`` compares
every map's key and value types, and the layout of the capture's metadata, with the compiled
program's own (BCC reads them from it), and ``verify_pinned`` the pinned maps' sizes, so a
DataPlane refuses to run on a mismatch with one line.
"""

from __future__ import annotations

import ast
import ctypes as ct
import re
from dataclasses import dataclass
from pathlib import Path


class AbiError(Exception):
    """bpf/abi.h, or a program, does not say what user space reads; str() is one line."""


BASIC_TYPES = {"__u8": ct.c_uint8, "__u16": ct.c_uint16, "__u32": ct.c_uint32,
               "__u64": ct.c_uint64, "__be16": ct.c_uint16, "__be32": ct.c_uint32}

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_DEFINE = re.compile(r"#define\s+(\w+)(?:\s+(.+))?")
_STRUCT = re.compile(r"struct\s+(\w+)\s*\{([^}]*)\}\s*;", re.S)
_FIELD = re.compile(r"(struct\s+\w+|\w+)\s+(\w+)\s*(?:\[([^\]]+)\])?")
_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")
# Map sizes the DataPlane compiles in (-D), so no pin or compiled map is held to one number.
COMPILED_SIZES = ("FB_CAPACITY", "FB_RATE_ENTRIES")
_MAP = re.compile(r'BPF_TABLE_PINNED\(\s*"(\w+)"\s*,\s*([\w ]+?)\s*,\s*([\w ]+?)\s*,\s*(\w+)\s*,'
                  r'\s*(\w+)\s*,\s*FB_PIN\("(\w+)"\)', re.S)
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.LShift, ast.RShift, ast.BitOr,
              ast.BitAnd, ast.BitXor)


@dataclass(frozen=True)
class MapSpec:
    """A map a program declares with BPF_TABLE_PINNED."""
    name: str
    kind: str                   # "hash", "lru_hash", "lpm_trie", "array", "percpu_array"
    key: type                   # a ctypes type
    value: type
    entries: int | None         # None: a size the DataPlane is made with (COMPILED_SIZES)
    pin: str


class Abi:
    def __init__(self, constants: dict, structs: dict, maps: dict, source: str):
        self.constants = constants
        self.structs = structs
        self.maps = maps
        self.source = source

    def __getitem__(self, name: str) -> int:
        try:
            return self.constants[name]
        except KeyError:
            raise AbiError(f"{self.source} defines no {name}") from None

    def struct(self, name: str) -> type:
        try:
            return self.structs[name]
        except KeyError:
            raise AbiError(f"{self.source} declares no struct {name}") from None

    def group(self, prefix: str) -> dict[str, int]:
        """{lower-case name after the prefix: value} of the constants named prefix + ..."""
        return {name[len(prefix):].lower(): value for name, value in self.constants.items()
                if name.startswith(prefix)}

    @property
    def pinned(self) -> tuple[str, ...]:
        return tuple(self.maps)


def _evaluate(expression: str, constants: dict, where: str) -> int:
    text = _SUFFIX.sub(r"\1", expression.strip()).replace("/", "//")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise AbiError(f"{where}: {expression.strip()!r} is not an integer expression") from None

    def value(node) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in constants:
            return constants[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, _OPERATORS):
            return _apply(node.op, value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Invert)):
            operand = value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else ~operand
        raise AbiError(f"{where}: cannot evaluate {ast.unparse(node)!r} in "
                       f"{expression.strip()!r}")
    return value(tree.body)


def _apply(op, left: int, right: int) -> int:
    return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right,
            ast.FloorDiv: left // right if right else 0, ast.LShift: left << right,
            ast.RShift: left >> right, ast.BitOr: left | right, ast.BitAnd: left & right,
            ast.BitXor: left ^ right}[type(op)]


def _ctype(name: str, structs: dict, where: str):
    name = " ".join(name.split())
    if name in BASIC_TYPES:
        return BASIC_TYPES[name]
    if name.startswith("struct ") and name[7:] in structs:
        return structs[name[7:]]
    raise AbiError(f"{where}: unknown type {name!r}")


def parse(text: str, source: str = "bpf/abi.h") -> tuple[dict, dict]:
    """(constants, structs) of an abi.h text."""
    constants: dict[str, int] = {}
    structs: dict[str, type] = {}
    stripped = _COMMENT.sub(lambda m: "\n" * m.group().count("\n"), text)
    position = 0
    for match in _STRUCT.finditer(stripped):
        _defines(stripped[position:match.start()], constants, source, stripped, position)
        name, body = match.group(1), match.group(2)
        fields = []
        for declaration in body.split(";"):
            if not declaration.strip():
                continue
            field = _FIELD.fullmatch(declaration.strip())
            where = f"{source}: struct {name}"
            if field is None:
                raise AbiError(f"{where}: cannot read {declaration.strip()!r}")
            kind = _ctype(field.group(1), structs, where)
            if field.group(3) is not None:
                kind = kind * _evaluate(field.group(3), constants, where)
            fields.append((field.group(2), kind))
        structs[name] = type(name, (ct.Structure,), {"_fields_": fields})
        position = match.end()
    _defines(stripped[position:], constants, source, stripped, position)
    return constants, structs


def _defines(chunk: str, constants: dict, source: str, whole: str, offset: int) -> None:
    for number, line in enumerate(chunk.splitlines()):
        line = line.strip()
        if not line or line.startswith(("#ifndef", "#endif")):
            continue
        where = f"{source}:{whole.count(chr(10), 0, offset) + number + 1}"
        define = _DEFINE.fullmatch(line)
        if define is None:
            raise AbiError(f"{where}: cannot read {line!r}")
        if define.group(2) is not None:
            constants[define.group(1)] = _evaluate(define.group(2), constants, where)


def _maps(sources: list[Path], constants: dict, structs: dict) -> dict[str, MapSpec]:
    maps = {}
    for path in sources:
        text = _COMMENT.sub("", path.read_text())
        for kind, key, value, name, entries, pin in _MAP.findall(text):
            where = f"{path.name}: map {name}"
            count = None if entries in COMPILED_SIZES else _evaluate(entries, constants, where)
            maps[pin] = MapSpec(name, kind, _ctype(key, structs, where),
                                _ctype(value, structs, where), count, pin)
    return maps


def load(bpf_dir: str | Path) -> Abi:
    """The ABI of the programs in bpf_dir (abi.h, and the maps its .c and .h files pin)."""
    bpf_dir = Path(bpf_dir)
    header = bpf_dir / "abi.h"
    try:
        constants, structs = parse(header.read_text(), str(header))
    except OSError as error:
        raise AbiError(f"cannot read {header}: {error.strerror}") from None
    sources = sorted(p for p in bpf_dir.iterdir() if p.suffix in (".c", ".h"))
    return Abi(constants, structs, _maps(sources, constants, structs), str(header))


def verify_compiled(abi: Abi, bpf) -> None:
    """Raises AbiError when the compiled program (a bcc.BPF) lays out a map's key or value,
    or the capture's metadata, otherwise than abi.h says."""
    checks = []
    for name, spec in abi.maps.items():
        table = bpf[spec.name.encode()]
        value = table.Leaf
        if spec.kind.startswith("percpu") and issubclass(value, ct.Array):
            value = value._type_                # BCC reads one value per CPU
        checks += [(f"map {name} key", table.Key, spec.key),
                   (f"map {name} value", value, spec.value)]
        if spec.entries is not None and table.max_entries != spec.entries:
            checks.append((f"map {name}", table.max_entries, spec.entries))
    checks.append(("struct fb_capture_meta", bpf[b"meta_layout"].Leaf,
                   abi.struct("fb_capture_meta")))
    checks.append(("struct fb_scan_table", bpf[b"scan_table"].Leaf,
                   abi.struct("fb_scan_table")))
    for what, compiled, declared in checks:
        difference = (f"{compiled} entries compiled, {declared} declared"
                      if isinstance(compiled, int) else _difference(compiled, declared))
        if difference:
            raise AbiError(f"the compiled programs and {abi.source} disagree on {what}: "
                           f"{difference}; rebuild from one source tree")


def _difference(compiled, declared) -> str | None:
    if ct.sizeof(compiled) != ct.sizeof(declared):
        return f"{ct.sizeof(compiled)} bytes compiled, {ct.sizeof(declared)} declared"
    fields = getattr(declared, "_fields_", None)
    if not fields:
        return None
    for name, _ in fields:
        compiled_field = getattr(compiled, name, None)
        if compiled_field is None:
            return f"no field {name} compiled"
        if compiled_field.offset != getattr(declared, name).offset:
            return (f"field {name} at {compiled_field.offset} compiled, "
                    f"{getattr(declared, name).offset} declared")
    return None


def verify_pinned(abi: Abi, name: str, key_size: int, value_size: int,
                  max_entries: int) -> str | None:
    """None when a pinned map's sizes are what abi.h declares, else what differs."""
    spec = abi.maps[name]
    expected = (ct.sizeof(spec.key), ct.sizeof(spec.value))
    if (key_size, value_size) != expected:
        return f"key and value of {key_size} and {value_size} bytes, not {expected[0]} and " \
               f"{expected[1]}"
    if spec.entries is not None and max_entries != spec.entries:
        return f"{max_entries} entries, not {spec.entries}"
    return None


def bpf_dir() -> Path:
    """The BPF sources: bpf/ of the source tree, or fastban/bpf/ of an installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "bpf", here / "bpf"):
        if (candidate / "abi.h").exists():
            return candidate
    raise AbiError(f"the BPF sources (bpf/abi.h) are missing next to {here}")


ABI = load(bpf_dir())
