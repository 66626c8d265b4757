"""Debian packages as a data source, without root: ``apt-get download`` and reading files out of a ``.deb``.

Used by ``data.genres`` for the genres that only Debian packages (Austen's novels, the KJV).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from ..zoo import progress


class PackageUnavailable(RuntimeError):
    """A package cannot be fetched on this machine (no Debian package manager, or apt cannot find it)."""


def apt_download(package: str, dest: Path) -> Path:
    """Download ``package``'s ``.deb`` into ``dest`` with ``apt-get download`` (no root needed)."""
    command = f"apt-get download {package}"
    if shutil.which("apt-get") is None:
        raise PackageUnavailable(f"the Debian package {package!r} is needed and this machine has no apt-get: on Debian or "
                               f"Ubuntu, `{command}` fetches it; elsewhere skip this genre (see available_genres())")
    dest.mkdir(parents=True, exist_ok=True)
    progress(f"downloading the Debian package {package} (`{command}`)")
    done = subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True, text=True)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if done.returncode != 0 or len(debs) != 1:
        raise PackageUnavailable(f"`{command}` failed (exit {done.returncode}): {done.stderr.strip()[-400:]!r}; if apt "
                               f"cannot locate it, its package lists may be empty (`apt-get update`, as root)")
    return debs[0]


def deb_version(deb: Path) -> str:
    """The version in a ``.deb`` file name (``<package>_<version>_<arch>.deb``)."""
    return deb.name.split("_")[1]


def deb_files(deb: Path, paths: list[str], use_dpkg: bool | None = None) -> dict[str, bytes]:
    """``{path: bytes}`` of files inside a ``.deb`` (paths without the leading ``./``).

    ``dpkg-deb --fsys-tarfile`` unpacks it when present (``use_dpkg=None``); otherwise the ``ar``
    archive is read here, which handles gzip/xz/bzip2 data members (not zstd).
    """
    if use_dpkg is None:
        use_dpkg = shutil.which("dpkg-deb") is not None
    if use_dpkg:
        payload = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
    else:
        payload = _deb_data_member(Path(deb).read_bytes())
    try:
        tar = tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
    except tarfile.ReadError as err:
        raise PackageUnavailable(f"cannot unpack {deb.name} ({err}); install dpkg-deb (package dpkg) to read it") from err
    found = {}
    with tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if member.isfile() and name in paths:
                found[name] = tar.extractfile(member).read()
    missing = sorted(set(paths) - set(found))
    if missing:
        raise RuntimeError(f"{deb.name} holds no file {missing}")
    return found


def _deb_data_member(archive: bytes) -> bytes:
    """The ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive: 60-byte headers, even-padded members)."""
    if archive[:8] != b"!<arch>\n":
        raise ValueError(f"not a .deb (ar) archive: starts with {archive[:8]!r}, expected b'!<arch>\\n'")
    pos, names = 8, []
    while pos + 60 <= len(archive):
        header = archive[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        pos += 60
        if name.startswith("data.tar"):
            return archive[pos : pos + size]
        names.append(name)
        pos += size + size % 2
    raise ValueError(f"the .deb has no data.tar member; members: {names}")


def debian_available(packages: tuple[str, ...]) -> bool:
    """Whether apt knows every package (from its local lists: no download, no root)."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        return False
    done = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages], capture_output=True)
    return done.returncode == 0
