"""Genres of text: the R data reader, .deb unpacking, the registry's splits and caching.

Unit tests build their inputs here (R serializations, .deb archives, sdists) and download nothing;
the ``genres`` tests fetch each genre available here once into the cache.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import lzma
import shutil
import struct
import tarfile
import zlib

import pytest

from sdtp_adapter.data import debian, genres, rdata

# ---- a tiny writer of R's XDR serialization (what R's serialize() writes) --------------------------


def i32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def flags(kind: int, attr: bool = False, tag: bool = False, levels: int = 0) -> bytes:
    return i32(kind | (attr << 9) | (tag << 10) | (levels << 12))


NIL = i32(254)


def header(version: int = 3) -> bytes:
    head = b"X\n" + i32(version, 0x040201, 0x030500)
    return head + (i32(5) + b"UTF-8" if version == 3 else b"")


def char(s: str | None, latin1: bool = False) -> bytes:
    if s is None:
        return flags(9) + i32(-1)
    raw = s.encode("latin-1" if latin1 else "utf-8")
    return flags(9, levels=4 if latin1 else 8) + i32(len(raw)) + raw


def symbol(name: str) -> bytes:
    return flags(1) + char(name)


def ref(index: int) -> bytes:
    return i32((index << 8) | 255)


def names_attr(names: list[str], names_symbol: bytes) -> bytes:
    """An attribute pairlist holding only ``names``; ``names_symbol`` is the symbol or a reference to it."""
    return flags(2, tag=True) + names_symbol + flags(16) + i32(len(names)) + b"".join(map(char, names)) + NIL


def strs(items: list, attrs: bytes = b"") -> bytes:
    return flags(16, attr=bool(attrs)) + i32(len(items)) + b"".join(char(s) for s in items) + attrs


def ints(items: list[int | None], kind: int = 13) -> bytes:
    return flags(kind) + i32(len(items)) + i32(*[-(2**31) if v is None else v for v in items])


def reals(items: list[float]) -> bytes:
    return flags(14) + i32(len(items)) + struct.pack(f">{len(items)}d", *items)


def vec(items: list[bytes], attrs: bytes = b"") -> bytes:
    return flags(19, attr=bool(attrs)) + i32(len(items)) + b"".join(items) + attrs


def named_list(values: dict[str, bytes], names_symbol: bytes) -> bytes:
    return vec(list(values.values()), names_attr(list(values), names_symbol))


# ---- the R reader ----------------------------------------------------------------------------------


def test_rds_strings_with_na_and_encodings():
    data = gzip.compress(header() + flags(16) + i32(4) + char("Emma") + char(None) + char("café") + char("naïve", latin1=True))
    assert rdata.read_rds(data) == ["Emma", None, "café", "naïve"]


def test_named_list_with_integers_logicals_and_doubles():
    body = named_list({"a": ints([1, None, 3]), "b": ints([1, 0, None], kind=10), "c": reals([0.5, -2.0])}, symbol("names"))
    got = rdata.read_rds(header(version=2) + body)
    assert got.names == ["a", "b", "c"]
    assert got.as_dict() == {"a": [1, None, 3], "b": [True, False, None], "c": [0.5, -2.0]}


def test_rda_file_bzip2_with_symbol_references():
    # the second use of the symbol `names` is a reference to the first (reference table index 1..)
    objects = (
        flags(2, tag=True) + symbol("first") + named_list({"x": strs(["one"])}, symbol("names"))
        + flags(2, tag=True) + symbol("second") + strs(["two", "three"], names_attr(["p", "q"], ref(2)))
        + NIL
    )
    got = rdata.read_rdata(bz2.compress(b"RDX3\n" + header() + objects))
    assert list(got) == ["first", "second"]
    assert got["first"].as_dict() == {"x": ["one"]} and got["second"].names == ["p", "q"]


@pytest.mark.parametrize("compressed", ["zlib", "xz"])
def test_lazyload_database(tmp_path, compressed):
    blobs, where = b"", {}
    for name, text in {"novel": ["It is a truth", ""], "other": ["x"]}.items():
        raw = header() + strs(text)
        packed = zlib.compress(raw) if compressed == "zlib" else b"X" + lzma.compress(raw)
        blob = struct.pack(">I", len(raw)) + packed
        where[name] = ints([len(blobs), len(blob)])
        blobs += blob
    flag = flags(10) + i32(1, 1) if compressed == "zlib" else reals([3.0])  # compress=TRUE or 3
    index = named_list({"variables": named_list(where, symbol("names")), "references": vec([]), "compressed": flag}, ref(1))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(header() + index))
    (tmp_path / "Rdata.rdb").write_bytes(blobs)
    got = rdata.read_lazyload_db(tmp_path / "Rdata.rdx", tmp_path / "Rdata.rdb")
    assert got == {"novel": ["It is a truth", ""], "other": ["x"]}


def test_long_pairlist_is_read_without_recursion():
    cells = b"".join(flags(2) + ints([i]) for i in range(5000))
    assert [v[0] for v in rdata.unserialize(header() + cells + NIL)] == list(range(5000))


def test_altrep_compact_sequence_is_expanded():
    info = flags(2) + symbol("compact_intseq") + flags(2) + symbol("base") + flags(2) + ints([13]) + NIL
    got = rdata.unserialize(header() + flags(238) + info + reals([4.0, 7.0, 1.0]) + NIL)
    assert got == [7, 8, 9, 10]


def test_unsupported_type_and_format_are_named():
    with pytest.raises(ValueError, match="R object type 22 is not supported"):
        rdata.unserialize(header() + flags(22))
    with pytest.raises(ValueError, match=r"format b'A\\n' is not supported"):
        rdata.unserialize(b"A\n" + header()[2:])
    with pytest.raises(ValueError, match="magic b'RDA2"):
        rdata.read_rdata(b"RDA2\n" + header())


# ---- .deb archives -----------------------------------------------------------------------------------


def tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_deb(path, files: dict[str, bytes]):
    """A minimal valid .deb: an ar archive of debian-binary, control.tar.gz and data.tar.xz."""
    control = b"Package: x\nVersion: 1\nArchitecture: all\nMaintainer: a <a@b.c>\nDescription: x\n"
    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", tar_bytes({"./control": control}, "w:gz")),
               ("data.tar.xz", tar_bytes(files, "w:xz"))]
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    path.write_bytes(out)
    return path


@pytest.mark.parametrize("use_dpkg", [False, True])
def test_deb_files_are_read(tmp_path, use_dpkg):
    if use_dpkg and shutil.which("dpkg-deb") is None:
        pytest.skip("no dpkg-deb here")
    deb = make_deb(tmp_path / "x_1.0-1_all.deb", {"./usr/share/x/a.txt": b"hello", "./usr/share/x/b.txt": b"other"})
    assert debian.deb_files(deb, ["usr/share/x/a.txt"], use_dpkg=use_dpkg) == {"usr/share/x/a.txt": b"hello"}
    with pytest.raises(RuntimeError, match="holds no file"):
        debian.deb_files(deb, ["usr/missing"], use_dpkg=use_dpkg)
    assert debian.deb_version(deb) == "1.0-1"


def test_not_a_deb_is_refused(tmp_path):
    (tmp_path / "bad.deb").write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ValueError, match="not a .deb"):
        debian.deb_files(tmp_path / "bad.deb", ["x"], use_dpkg=False)


def test_no_apt_get_names_the_package_and_command(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(genres.GenreUnavailable, match="r-cran-janeaustenr.*`apt-get download r-cran-janeaustenr`"):
        debian.apt_download("r-cran-janeaustenr", tmp_path)
    assert debian.debian_available(("r-cran-janeaustenr",)) is False


def test_apt_failure_is_reported_with_apt_s_message(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package nosuch' >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(genres.GenreUnavailable, match=r"exit 100.*Unable to locate package nosuch.*apt-get update"):
        debian.apt_download("nosuch", tmp_path / "dl")


# ---- document assembly -----------------------------------------------------------------------------


def test_novels_from_r_objects():
    objects = {key: [key.upper(), "", "", "", "line", None, "end"] for key in genres.AUSTEN_NOVELS}
    novels = genres.novels_from_r(objects)
    assert sorted(novels) == sorted(genres.AUSTEN_NOVELS.values())
    assert novels["pride_and_prejudice"] == "PRIDEPREJUDICE\n\nline\n\nend"
    with pytest.raises(RuntimeError, match=r"holds \['emma'\]; expected"):
        genres.novels_from_r({"emma": ["x"]})


def test_bible_dump_is_split_into_books():
    abbrevs = [chr(65 + i // 26) + chr(97 + i % 26) for i in range(66)]
    dump = "".join(f"{a}1:1 First verse of {a}.\n{a}1:2 Second.\n{a}2:1 Next chapter.\n" for a in abbrevs)
    books = genres.bible_from_dump(dump)
    assert list(books)[:2] == ["genesis", "exodus"] and "song_of_solomon" in books and len(books) == 66
    assert books["genesis"] == "Genesis\n\n1:1 First verse of Aa.\n1:2 Second.\n2:1 Next chapter."
    with pytest.raises(RuntimeError, match="printed 1 books"):
        genres.bible_from_dump("Ge1:1 In the beginning.\n")


def test_plays_leave_out_poems_and_milton(monkeypatch):
    texts = {"train": {"hamlet": "To be", "sonnets": "Shall I compare", "paradise_regained": "I, who erewhile"},
             "heldout": {"lear": "Nothing"}}
    monkeypatch.setattr(genres.corpora, "shakespeare_texts", lambda split: texts[split])
    assert genres.plays_documents() == {"hamlet": "To be", "lear": "Nothing"}


def test_code_modules_exclude_generated_tables():
    assert genres.is_code_module("rich/console.py") and genres.is_code_module("rich/_unicode_data/__init__.py")
    for path in ("rich/_emoji_codes.py", "rich/_unicode_data/unicode15-1-0.py", "README.md", "tests/test_x.py"):
        assert not genres.is_code_module(path)


def fake_sdist(tmp_path, monkeypatch) -> str:
    """Makes ``pip_download`` return a small rich-like sdist; returns its SHA-256."""
    sdist = tmp_path / "rich-15.0.0.tar.gz"
    sdist.write_bytes(tar_bytes({"rich-15.0.0/rich/a.py": b"def f():\n    return 1\n", "rich-15.0.0/rich/_emoji_codes.py": b"X = {}\n",
                                 "rich-15.0.0/README.md": b"# rich\n"}, "w:gz"))
    monkeypatch.setattr(genres, "pip_download", lambda requirement, dest, source=False: sdist)
    return hashlib.sha256(sdist.read_bytes()).hexdigest()


def test_code_documents_from_a_pinned_sdist(tmp_path, monkeypatch):
    monkeypatch.setattr(genres, "CODE_SHA256", fake_sdist(tmp_path, monkeypatch))
    assert genres.code_documents() == {"rich/a.py": "# rich/a.py\ndef f():\n    return 1\n"}


def test_sdist_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    fake_sdist(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="checksum mismatch for rich==15.0.0: expected 00"):
        genres.sdist_texts("rich==15.0.0", "00" * 32, genres.is_code_module)


def test_documents_are_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDTP_CACHE", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"doc": "text é"}

    assert genres.cached_documents("k", build) == {"doc": "text é"}
    assert genres.cached_documents("k", build) == {"doc": "text é"} and len(calls) == 1
    assert [p.name for p in (tmp_path / "corpora" / "genres").iterdir()] == ["k.json"]  # no staging file left


# ---- the registry ------------------------------------------------------------------------------------


def fake_documents(spec: genres.Genre) -> dict[str, str]:
    """Every held-out name of ``spec`` plus training documents and one too short to keep."""
    docs = {name: f"{name} " * 400 for name in spec.held_out}
    docs.update({f"train_{i}": f"text {i} " * 300 for i in range(5)})
    docs["tiny"] = "short"
    return docs


@pytest.mark.parametrize("genre", sorted(genres.GENRES))
def test_splits_are_disjoint_whole_documents_and_deterministic(genre, monkeypatch):
    spec = genres.GENRES[genre]
    docs = fake_documents(spec)
    monkeypatch.setitem(genres.GENRES, genre, dataclasses.replace(spec, load=lambda: dict(reversed(docs.items()))))
    train, held = genres.genre_texts(genre, "train"), genres.genre_texts(genre, "heldout")
    assert set(held) == set(spec.held_out) and not set(train) & set(held)
    assert set(train) | set(held) == set(docs) - {"tiny"}  # shorter than MIN_DOCUMENT_CHARS: dropped
    assert list(train) == sorted(train) and all(train[k] == docs[k] for k in train)
    assert genres.genre_texts(genre, "train") == train


def test_registry_lists_the_genres_with_distinct_held_out_documents():
    assert {"plays", "novels", "code", "technical", "bible"} <= set(genres.GENRES)
    for name, spec in genres.GENRES.items():
        assert spec.name == name and spec.held_out and len(set(spec.held_out)) == len(spec.held_out)


def test_missing_held_out_document_is_reported(monkeypatch):
    spec = dataclasses.replace(genres.GENRES["novels"], load=lambda: {"emma": "x" * 2000})
    monkeypatch.setitem(genres.GENRES, "novels", spec)
    with pytest.raises(RuntimeError, match=r"held-out document\(s\) \['northanger_abbey', 'persuasion'\]"):
        genres.genre_texts("novels", "train")


def test_bad_genre_or_split_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"genre='poems' is unknown; allowed: \['bible', 'code'"):
        genres.genre_texts("poems")
    with pytest.raises(ValueError, match=r"split='test' is invalid; allowed: \('train', 'heldout'\)"):
        genres.genre_texts("plays", "test")


def test_available_genres_asks_each_genre_without_loading(monkeypatch):
    for name, spec in list(genres.GENRES.items()):
        def refuse():
            raise AssertionError("available_genres must not load documents")
        monkeypatch.setitem(genres.GENRES, name, dataclasses.replace(spec, load=refuse, available=lambda n=name: n != "bible"))
    assert genres.available_genres() == [n for n in genres.GENRES if n != "bible"]


# ---- the real sources (downloaded once into the cache) -------------------------------------------------

MARKERS = {
    "plays": ("hamlet", "To be, or not to be"),
    "novels": ("persuasion", "Sir Walter Elliot, of Kellynch Hall"),
    "code": ("rich/table.py", "class Table("),
    "technical": ("docs/ref/rst/restructuredtext.rst", "reStructuredText"),
    "bible": ("revelation", "The grace of our Lord Jesus Christ be with you all. Amen."),
}


@pytest.mark.genres
@pytest.mark.parametrize("genre", sorted(MARKERS))
def test_real_genre(genre):
    if genre not in genres.available_genres():
        pytest.skip(f"genre {genre!r} cannot be fetched here")
    train, held = genres.genre_texts(genre, "train"), genres.genre_texts(genre, "heldout")
    assert set(held) == set(genres.GENRES[genre].held_out) and train and not set(train) & set(held)
    # enough held-out text for 2K-token windows (~8K characters) from every held-out document
    assert min(map(len, held.values())) > 8000 and sum(map(len, held.values())) > 150_000
    document, marker = MARKERS[genre]
    assert marker in held[document]
    text = "".join(held.values())
    printable = sum(c.isprintable() or c in "\n\t" for c in text)
    assert printable / len(text) > 0.999
    assert genres.genre_texts(genre, "heldout") == held
    if genre == "plays":
        assert len(train) + len(held) == 37 and not set(genres.NOT_PLAYS) & set(train)


@pytest.mark.genres
def test_real_austen_r_data_has_the_six_novels():
    if "novels" not in genres.available_genres():
        pytest.skip("r-cran-janeaustenr cannot be fetched here")
    novels = {**genres.genre_texts("novels", "train"), **genres.genre_texts("novels", "heldout")}
    assert sorted(novels) == sorted(genres.AUSTEN_NOVELS.values())
    assert "It is a truth universally acknowledged" in novels["pride_and_prejudice"]
    assert all(len(text) > 400_000 for text in novels.values())
