"""ZIP handling for uploads: refuse what is unsafe, extract what is data.

Checked before anything is extracted: entry count, declared total size, per-entry
compression ratio (ZIP bombs), encryption, symlinks, absolute paths and `..` components.
Extraction never uses an entry's name as a path, and counts the bytes it actually inflates,
because the sizes a ZIP declares can lie.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from api.errors import TooLarge, Unprocessable

_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_CHUNK = 1 << 20
# Below this size a high ratio is harmless (a small file of repeated values compresses well).
_RATIO_FLOOR_BYTES = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int
    max_uncompressed: int
    max_ratio: int


@dataclass(frozen=True)
class Member:
    name: str
    path: Path
    size: int
    sha256: str


def _unsafe(name: str) -> bool:
    if "\x00" in name:
        return True
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return True
    return ".." in PurePosixPath(posix).parts


def is_junk(name: str) -> bool:
    posix = name.replace("\\", "/")
    base = posix.rsplit("/", 1)[-1]
    return posix.startswith("__MACOSX/") or base.startswith(".") or base.lower() in _JUNK_NAMES


def open_checked(path: Path, limits: ZipLimits, label: str = "archive") -> zipfile.ZipFile:
    """Open a ZIP (an upload, or an .xlsx, which is one) and refuse it unless every entry is
    safe and the whole would inflate within the limits."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise Unprocessable(f"The {label} is not a valid ZIP file.") from None
    try:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise Unprocessable(
                f"The {label} has {len(infos)} entries; at most {limits.max_entries} are accepted."
            )
        total = 0
        for info in infos:
            # zipfile cuts `filename` at a NUL byte; judge the name as the archive stores it.
            if _unsafe(info.filename) or _unsafe(info.orig_filename):
                shown = info.orig_filename.replace("\x00", "\\x00")
                raise Unprocessable(f"The {label} entry '{shown}' has an unsafe path.")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise Unprocessable(f"The {label} entry '{info.filename}' is a symbolic link.")
            if info.flag_bits & 0x1:
                raise Unprocessable(f"The {label} entry '{info.filename}' is encrypted.")
            total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
                raise Unprocessable(
                    f"The {label} entry '{info.filename}' expands {ratio:.0f}-fold "
                    f"(more than {limits.max_ratio}); it looks like a ZIP bomb."
                )
        if total > limits.max_uncompressed:
            raise TooLarge(
                f"The {label} would expand to {total // (1 << 20)} MB; "
                f"at most {limits.max_uncompressed // (1 << 20)} MB are accepted."
            )
    except BaseException:
        archive.close()
        raise
    return archive


def extract_members(path: Path, dest: Path, limits: ZipLimits) -> list[Member]:
    """Extract the data files of an uploaded ZIP into `dest` as member-N files."""
    members: list[Member] = []
    inflated = 0
    with open_checked(path, limits) as archive:
        for index, info in enumerate(archive.infolist()):
            if info.is_dir() or is_junk(info.filename):
                continue
            suffix = PurePosixPath(info.filename.replace("\\", "/")).suffix.lower()[:16]
            target = dest / f"member-{index}{suffix}"
            digest = hashlib.sha256()
            size = 0
            try:
                with archive.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        inflated += len(chunk)
                        if size > info.file_size or inflated > limits.max_uncompressed:
                            raise Unprocessable(
                                f"The archive entry '{info.filename}' inflates beyond its "
                                "declared size; the archive is corrupt or malicious."
                            )
                        digest.update(chunk)
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                # zipfile stops at the declared size and then finds the CRC wrong: the same
                # lie, seen from the other side (and any other damage to the entry).
                target.unlink(missing_ok=True)
                raise Unprocessable(
                    f"The archive entry '{info.filename}' cannot be extracted ({exc}); "
                    "the archive is corrupt or malicious."
                ) from None
            members.append(Member(info.filename, target, size, digest.hexdigest()))
    if not members:
        raise Unprocessable("The archive contains no data files.")
    return members
