"""A minimal reader for R's serialized data (XDR format), enough for text packaged as R data.

R packages ship data as ``.rds`` files (one serialized object), ``.rda``/``.RData`` files (``RDX2``/
``RDX3`` magic, then a serialized pairlist of named objects) or, for ``LazyData`` packages, a
lazy-load database (``data/Rdata.rdx`` index + ``data/Rdata.rdb`` blobs). All three wrap R's
serialization format, versions 2 and 3, XDR (big-endian) flavour, usually gzip/bzip2/xz compressed.

Supported: ``NULL``, symbols, pairlists (and calls, read as pairlists), logical, integer, double,
complex, character and raw vectors, lists, expression vectors, S4 objects, attributes, references,
the special environments and the ALTREP classes R writes for sequences and wrapped vectors.
Functions, bytecode, external pointers and weak references raise ``ValueError``: this reader is for
data, not code. Values map to Python as: ``NULL`` -> ``None``, ``NA`` -> ``None`` (``NaN`` for
doubles), vectors and lists -> :class:`RVector` (a ``list`` that carries R attributes).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

# SEXP type codes of R's serialize.c (Rinternals.h), the ones this reader understands
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 9, 10, 13, 14, 15, 16, 17
VECSXP, EXPRSXP, RAWSXP, S4SXP = 19, 20, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP, PERSISTSXP = 250, 249, 248, 247
EMPTYENV_SXP, BASEENV_SXP, ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 242, 241, 240, 239, 238

PAIRLIST_TYPES = (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP)
SPECIAL_ENVIRONMENTS = {
    GLOBALENV_SXP: "R_GlobalEnv", EMPTYENV_SXP: "R_EmptyEnv", BASEENV_SXP: "R_BaseEnv",
    BASENAMESPACE_SXP: "R_BaseNamespace", UNBOUNDVALUE_SXP: "R_UnboundValue", MISSINGARG_SXP: "R_MissingArg",
}
NA_INTEGER = -(2**31)
LATIN1_MASK = 1 << 2  # a CHARSXP's encoding flag (in the "levels" bits, from bit 12 of the item header)
HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10


class RVector(list):
    """An R vector, list or pairlist as a Python list, with its R ``attributes`` (``{name: value}``)."""

    def __init__(self, items=(), attributes: dict | None = None, rtype: int = VECSXP):
        super().__init__(items)
        self.attributes = attributes or {}
        self.rtype = rtype

    @property
    def names(self) -> list[str] | None:
        """The ``names`` attribute, or ``None`` when the vector has none."""
        names = self.attributes.get("names")
        return list(names) if names is not None else None

    def as_dict(self) -> dict:
        """``{name: element}``; raises ``ValueError`` when the vector has no names."""
        names = self.names
        if names is None:
            raise ValueError(f"this R vector (type {self.rtype}, length {len(self)}) has no names attribute")
        return dict(zip(names, self))


class RSymbol(str):
    """An R symbol (a name), e.g. the tag of a pairlist cell."""


class REnvironment:
    """An R environment: its ``name`` for the special ones, ``bindings`` ({symbol: value}) otherwise."""

    def __init__(self, name: str = "", bindings: dict | None = None):
        self.name = name
        self.bindings = bindings or {}

    def __repr__(self) -> str:
        return f"REnvironment({self.name or len(self.bindings)!r})"


class RPersistent:
    """A reference R wrote through a persistence hook (e.g. an environment of a lazy-load database)."""

    def __init__(self, keys: list):
        self.keys = keys

    def __repr__(self) -> str:
        return f"RPersistent({self.keys!r})"


def decompress(data: bytes) -> bytes:
    """``data`` with gzip, bzip2 or xz compression removed (detected by magic bytes); other bytes unchanged."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_rds(data: bytes):
    """The object in an ``.rds`` file's bytes (``saveRDS``), compressed or not."""
    return unserialize(decompress(data))


def read_rdata(data: bytes) -> dict:
    """``{name: object}`` from an ``.rda``/``.RData`` file's bytes (``save``), compressed or not."""
    raw = decompress(data)
    magic = raw[:5]
    if magic not in (b"RDX2\n", b"RDX3\n"):
        raise ValueError(f"not an XDR R data file: magic {magic!r}; allowed: b'RDX2\\n', b'RDX3\\n'")
    objects = unserialize(raw[5:])
    if not isinstance(objects, RVector):
        raise ValueError(f"an R data file holds a pairlist of objects, got {type(objects).__name__}")
    return objects.as_dict()


def read_lazyload_db(rdx: Path, rdb: Path) -> dict:
    """``{name: object}`` of a lazy-load database (a ``LazyData`` package's ``data/Rdata.rdx``/``.rdb``)."""
    index = read_rds(Path(rdx).read_bytes()).as_dict()
    variables = index["variables"].as_dict()
    compressed = index.get("compressed", [True])[0]
    blob = Path(rdb).read_bytes()
    return {name: unserialize(_lazyload_blob(blob, int(where[0]), int(where[1]), compressed)) for name, where in variables.items()}


def _lazyload_blob(blob: bytes, offset: int, length: int, compressed) -> bytes:
    """The serialized bytes of one object of an ``.rdb`` file (R's ``lazyLoadDBfetch``)."""
    chunk = blob[offset : offset + length]
    size = struct.unpack(">I", chunk[:4])[0]
    if compressed in (True, 1):  # zlib, the R default
        out = zlib.decompress(chunk[4:])
    elif compressed in (2, 3):  # one type byte names the method
        kind, body = chunk[4:5], chunk[5:]
        methods = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
        if kind not in methods:
            raise ValueError(f"unknown lazy-load compression type {kind!r}; allowed: {sorted(methods)}")
        out = methods[kind](body)
    elif compressed in (False, 0):
        out = chunk[4:]
    else:
        raise ValueError(f"unknown lazy-load compression {compressed!r}; allowed: TRUE/1, 2, 3, FALSE/0")
    if len(out) != size:
        raise ValueError(f"lazy-load blob at offset {offset}: expected {size} bytes, got {len(out)}")
    return out


def unserialize(data: bytes):
    """The object in R's serialization format (XDR, versions 2 and 3), uncompressed."""
    return _Reader(data).read_stream()


class _Reader:
    """A cursor over serialized bytes; ``refs`` is R's reference table (symbols, environments)."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0
        self.refs: list = []

    def read_stream(self):
        """Check the header (format, version) and read the one top-level object."""
        fmt = bytes(self.data[:2])
        if fmt != b"X\n":
            raise ValueError(f"serialization format {fmt!r} is not supported; allowed: b'X\\n' (XDR)")
        self.pos = 2
        version = self.int()
        if version not in (2, 3):
            raise ValueError(f"serialization version {version} is not supported; allowed: 2, 3")
        self.int(), self.int()  # writer's R version, minimal reader version
        if version == 3:
            size = self.int()  # then the native encoding's name, e.g. "UTF-8"
            self.pos += size
        return self.item()

    def int(self) -> int:
        """One big-endian 32-bit integer."""
        value = struct.unpack_from(">i", self.data, self.pos)[0]
        self.pos += 4
        return value

    def ints(self, n: int) -> tuple[int, ...]:
        """``n`` big-endian 32-bit integers."""
        values = struct.unpack_from(f">{n}i", self.data, self.pos)
        self.pos += 4 * n
        return values

    def doubles(self, n: int) -> tuple[float, ...]:
        """``n`` big-endian IEEE-754 doubles."""
        values = struct.unpack_from(f">{n}d", self.data, self.pos)
        self.pos += 8 * n
        return values

    def length(self) -> int:
        """A vector length; ``-1`` announces a long vector's 64-bit length in two ints."""
        n = self.int()
        if n == -1:
            upper, lower = self.ints(2)
            n = (upper << 32) + (lower & 0xFFFFFFFF)
        return n

    def item(self, flags: int | None = None):
        """One serialized object; ``flags`` when its header was already read."""
        if flags is None:
            flags = self.int()
        kind = flags & 0xFF
        if kind == NILVALUE_SXP:
            return None
        if kind in SPECIAL_ENVIRONMENTS:
            return REnvironment(SPECIAL_ENVIRONMENTS[kind])
        if kind == REFSXP:
            index = (flags >> 8) or self.int()
            return self.refs[index - 1]
        if kind in PAIRLIST_TYPES:
            return self.pairlist(flags)
        reader = self.READERS.get(kind)
        if reader is None:
            raise ValueError(f"R object type {kind} is not supported (this reader is for data); supported: {sorted(self.READERS)}")
        value = reader(self, flags)
        if flags & HAS_ATTR and kind not in (CHARSXP, ENVSXP, ALTREP_SXP, S4SXP):
            value.attributes = self.attributes()
        return value

    def attributes(self) -> dict:
        """An attribute pairlist as ``{name: value}``."""
        pairs = self.item()
        return pairs.as_dict() if pairs is not None else {}

    def charsxp(self, flags: int) -> str | None:
        """One string (``None`` for ``NA``), decoded by its encoding flag."""
        n = self.int()
        if n == -1:
            return None
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        if flags & (LATIN1_MASK << 12):
            return raw.decode("latin-1")
        # UTF-8, ASCII and "native" strings: packages built on current R are UTF-8
        return raw.decode("utf-8", errors="replace")

    def strsxp(self, flags: int) -> RVector:
        """A character vector (its elements are CHARSXPs, read inline for speed)."""
        out = []
        for _ in range(self.length()):
            header = self.int()
            if header & 0xFF != CHARSXP:
                raise ValueError(f"a character vector holds a non-string element (type {header & 0xFF})")
            out.append(self.charsxp(header))
        return RVector(out, rtype=STRSXP)

    def intsxp(self, flags: int) -> RVector:
        """An integer vector, ``NA`` as ``None``."""
        values = self.ints(self.length())
        return RVector((None if v == NA_INTEGER else v for v in values), rtype=INTSXP)

    def lglsxp(self, flags: int) -> RVector:
        """A logical vector as ``bool``, ``NA`` as ``None``."""
        values = self.ints(self.length())
        return RVector((None if v == NA_INTEGER else bool(v) for v in values), rtype=LGLSXP)

    def realsxp(self, flags: int) -> RVector:
        """A double vector (``NA`` stays R's NaN)."""
        return RVector(self.doubles(self.length()), rtype=REALSXP)

    def cplxsxp(self, flags: int) -> RVector:
        """A complex vector (pairs of doubles)."""
        parts = self.doubles(2 * self.length())
        return RVector((complex(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)), rtype=CPLXSXP)

    def rawsxp(self, flags: int) -> RVector:
        """A raw vector as a list of byte values."""
        n = self.length()
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return RVector(raw, rtype=RAWSXP)

    def vecsxp(self, flags: int) -> RVector:
        """A list or expression vector: each element a full object."""
        return RVector((self.item() for _ in range(self.length())), rtype=flags & 0xFF)

    def symsxp(self, flags: int) -> RSymbol:
        """A symbol; later uses of it are references to this one."""
        symbol = RSymbol(self.item())
        self.refs.append(symbol)
        return symbol

    def string_list(self) -> list:
        """R's ``InStringVec``: a zero, a count, then that many strings."""
        self.int()
        return [self.item() for _ in range(self.int())]

    def persistsxp(self, flags: int) -> RPersistent:
        """A persistence-hook reference (kept as its string keys)."""
        obj = RPersistent(self.string_list())
        self.refs.append(obj)
        return obj

    def namespacesxp(self, flags: int) -> REnvironment:
        """A namespace or package environment, named by its strings."""
        env = REnvironment(":".join(str(s) for s in self.string_list()))
        self.refs.append(env)
        return env

    def envsxp(self, flags: int) -> REnvironment:
        """An environment with its bindings (frame and hash table)."""
        env = REnvironment()
        self.refs.append(env)  # before its contents: they may refer back to it
        self.int()  # locked
        self.item()  # enclosing environment, not kept
        frame, table = self.item(), self.item()
        env.attributes = self.attributes()
        for pairs in ([frame] if frame is not None else []) + [p for p in (table or []) if p is not None]:
            env.bindings.update(pairs.as_dict())
        return env

    def s4sxp(self, flags: int) -> RVector:
        """An S4 object: nothing but its attributes."""
        return RVector(attributes=self.attributes() if flags & HAS_ATTR else {}, rtype=S4SXP)

    def altrep(self, flags: int) -> RVector:
        """R's compact representations, expanded: sequences, wrappers, deferred strings."""
        info, state, attrs = self.item(), self.item(), self.item()
        name = str(info[0])
        if name in ("compact_intseq", "compact_realseq"):
            n, start, step = state
            values = [start + i * step for i in range(int(n))]
            out = RVector((int(v) for v in values) if name == "compact_intseq" else values, rtype=INTSXP)
        elif name.startswith("wrap_"):
            out = RVector(state[0], rtype=state[0].rtype)
        elif name == "deferred_string":
            out = RVector((None if v is None else _r_number_string(v) for v in state[0]), rtype=STRSXP)
        else:
            raise ValueError(f"ALTREP class {name!r} is not supported; supported: compact_intseq, compact_realseq, wrap_*, deferred_string")
        out.attributes = attrs.as_dict() if attrs is not None else {}
        return out

    def pairlist(self, flags: int) -> RVector:
        """A pairlist (or call) read cell by cell, not recursively: data files can hold long ones."""
        values, tags, attributes, kind = [], [], {}, flags & 0xFF
        while True:
            if flags & HAS_ATTR:
                attributes.update(self.attributes())
            tags.append(str(self.item()) if flags & HAS_TAG else "")
            values.append(self.item())
            flags = self.int()
            if flags & 0xFF not in PAIRLIST_TYPES:
                break
        tail = self.item(flags)
        if tail is not None:  # a dotted pair: keep the final CDR as one more element
            values.append(tail)
            tags.append("")
        if any(tags):
            attributes["names"] = RVector(tags, rtype=STRSXP)
        return RVector(values, attributes=attributes, rtype=kind)

    READERS = {
        NILSXP: lambda self, flags: None,
        SYMSXP: symsxp, CHARSXP: charsxp, STRSXP: strsxp, INTSXP: intsxp, LGLSXP: lglsxp,
        REALSXP: realsxp, CPLXSXP: cplxsxp, RAWSXP: rawsxp, VECSXP: vecsxp, EXPRSXP: vecsxp,
        ENVSXP: envsxp, S4SXP: s4sxp, ALTREP_SXP: altrep, PERSISTSXP: persistsxp,
        NAMESPACESXP: namespacesxp, PACKAGESXP: namespacesxp,
    }


def _r_number_string(value) -> str:
    """How R's ``as.character`` writes an integer or a whole double (e.g. ``3``, not ``3.0``)."""
    return str(int(value)) if float(value).is_integer() else repr(value)
