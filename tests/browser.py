"""Test scaffolding: a headless Chromium from Debian's packages, fetched on first use without root.

``screenshot(html_file, png)`` and ``dump_dom(html_file)`` run Debian's ``chromium-headless-shell``:

1. a ``chromium-headless-shell`` on ``PATH`` (or ``$SDTP_BROWSER``, a path to the binary) is used as it is;
2. otherwise the package and the packages it needs that this machine lacks (what ``apt-get -s install``
   would install) are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into
   ``<cache>/browser/chromium-headless-shell-<version>/`` (``<cache>``: ``$SDTP_CACHE`` or
   ``~/.cache/sdtp_adapter``), once; the binary then runs with ``LD_LIBRARY_PATH`` pointing at the
   unpacked libraries and a fontconfig file that adds the unpacked fonts (DejaVu).

Nothing is installed system-wide. One fallback needs root: on a fresh image whose apt package lists are
empty (``apt-get`` cannot locate the package), a root process runs ``apt-get update`` once (lists only).
Without ``apt-get`` (not Debian or Ubuntu) ``BrowserUnavailable`` is raised and the tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sdtp_adapter.zoo import cache_root, progress

PACKAGE = "chromium-headless-shell"
EXTRA = ("fonts-dejavu-core",)  # text needs a font: a bare image may have none
BINARY = "usr/lib/chromium/chromium-headless-shell"
TIMEOUT_S = 180


class BrowserUnavailable(RuntimeError):
    """No Debian package manager here: the browser cannot be fetched."""


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def _to_install() -> list[str]:
    """Packages ``apt-get install`` would add for the browser (the browser itself included), by simulation."""
    command = ["apt-get", "-s", "--no-install-recommends", "install", PACKAGE, *EXTRA]
    done = _run(command)
    if done.returncode != 0 and "Unable to locate package" in done.stderr and os.geteuid() == 0:
        progress("apt package lists are empty: running `apt-get update` (root only; lists, no install)")
        _run(["apt-get", "update"])
        done = _run(command)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-400:]!r}; "
                           "if apt cannot locate the package, run `apt-get update` as root")
    return re.findall(r"^Inst (\S+)", done.stdout, flags=re.MULTILINE)


def _version() -> str:
    done = _run(["apt-cache", "policy", PACKAGE])
    found = re.search(r"Candidate: (\S+)", done.stdout)
    if done.returncode != 0 or not found or found.group(1) == "(none)":
        raise RuntimeError(f"apt knows no candidate of {PACKAGE}: {done.stdout.strip()[-300:]!r} (run `apt-get update`)")
    return found.group(1)


def _fetch(dest: Path) -> None:
    """Download and unpack the browser and its missing dependencies into ``dest`` (atomically)."""
    packages = _to_install()
    if PACKAGE not in packages:  # installed after all (a race with `which`): unpack it too, for one layout
        packages.append(PACKAGE)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        debs, root = Path(tmp) / "debs", Path(tmp) / "root"
        debs.mkdir()
        progress(f"downloading {len(packages)} Debian packages for a headless browser: {' '.join(packages)}")
        done = _run(["apt-get", "download", *packages], cwd=debs)
        if done.returncode != 0:
            raise RuntimeError(f"`apt-get download` failed (exit {done.returncode}): {done.stderr.strip()[-400:]!r}")
        for deb in sorted(debs.glob("*.deb")):
            done = _run(["dpkg-deb", "-x", str(deb), str(root)])
            if done.returncode != 0:
                raise RuntimeError(f"`dpkg-deb -x {deb.name}` failed: {done.stderr.strip()[-300:]!r}")
        if not (root / BINARY).is_file():
            raise RuntimeError(f"{PACKAGE} unpacked without {BINARY}")
        (root / "fonts.conf").write_text(
            '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
            '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
            f"  <dir>{dest / 'usr/share/fonts'}</dir>\n"
            f"  <cachedir>{dest / 'fontconfig-cache'}</cachedir>\n</fontconfig>\n"
        )
        os.replace(root, dest)  # a half-unpacked folder is never mistaken for a ready one


def browser() -> tuple[list[str], dict[str, str]]:
    """``(command prefix, environment)`` that runs the headless browser.

    Raises:
        BrowserUnavailable: no ``apt-get`` here and no browser on ``PATH`` / ``$SDTP_BROWSER``.
    """
    env = dict(os.environ)
    given = os.environ.get("SDTP_BROWSER") or shutil.which(PACKAGE)
    if given:
        return [given], env
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BrowserUnavailable(f"no {PACKAGE} on PATH and no apt-get/dpkg-deb to fetch it (set $SDTP_BROWSER)")
    dest = cache_root() / "browser" / f"{PACKAGE}-{_version()}"
    if not (dest / BINARY).is_file():
        _fetch(dest)
    libraries = sorted({str(p.parent) for p in dest.rglob("*.so*") if p.is_file()})
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["FONTCONFIG_FILE"] = str(dest / "fonts.conf")
    return [str(dest / BINARY)], env


def _flags(profile: str) -> list[str]:
    # --no-sandbox: CI runs tests as root, where Chromium's sandbox refuses to start
    return ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}"]


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1600) -> Path:
    """Load ``page`` (a local file) and save a ``width`` x ``height`` screenshot to ``png``."""
    command, env = browser()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([*command, *_flags(profile), f"--window-size={width},{height}", f"--screenshot={png}",
                               Path(page).resolve().as_uri()], capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"the browser took no screenshot (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return png


def dump_dom(page: Path) -> str:
    """The DOM of ``page`` after the browser parsed it, serialised (``--dump-dom``)."""
    command, env = browser()
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([*command, *_flags(profile), "--dump-dom", Path(page).resolve().as_uri()],
                              capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"the browser could not load {page} (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout
