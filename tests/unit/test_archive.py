"""ZIP uploads (api/ingest/archive.py): unsafe entries are refused before anything is
extracted, bombs are caught by their ratio and by counting what really inflates, and
extraction never trusts an entry's name or declared size."""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from api.errors import APIError
from api.ingest.archive import ZipLimits, extract_members, is_junk, open_checked
from tests.builders import LIMITS as INGEST_LIMITS
from tests.builders import MB, zip_bomb_bytes

LIMITS = INGEST_LIMITS.zip
CSV = b"a,b\n1,2\n3,4\n"

# Offsets of fields in the ZIP local file header and central directory header.
_LOCAL, _CENTRAL = b"PK\x03\x04", b"PK\x01\x02"
_LOCAL_FLAGS, _CENTRAL_FLAGS = 6, 8
_LOCAL_SIZE, _CENTRAL_SIZE = 22, 24


def make_zip(
    entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_headers(
    data: bytes, local_offset: int, central_offset: int, value: int, only: str | None = None
) -> bytes:
    """Overwrite one little-endian field in the local and central headers of every entry
    (or of the entry named `only`)."""
    out = bytearray(data)
    for signature, offset, name_at in ((_LOCAL, local_offset, 26), (_CENTRAL, central_offset, 28)):
        header_len = 30 if signature == _LOCAL else 46
        start = out.find(signature)
        while start != -1:
            (name_len,) = struct.unpack_from("<H", out, start + name_at)
            name = bytes(out[start + header_len : start + header_len + name_len])
            if only is None or name == only.encode():
                is_flags = offset in (_LOCAL_FLAGS, _CENTRAL_FLAGS)
                struct.pack_into("<H" if is_flags else "<I", out, start + offset, value)
            start = out.find(signature, start + 4)
    return bytes(out)


def rename_entry(data: bytes, placeholder: str, name: bytes) -> bytes:
    """Give an entry a name zipfile would not write (same length as the placeholder)."""
    assert len(placeholder.encode()) == len(name)
    return data.replace(placeholder.encode(), name)


def write(tmp_path: Path, data: bytes, name: str = "upload.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refuse(path: Path, limits: ZipLimits = LIMITS) -> APIError:
    out = path.parent / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(APIError) as caught:
        extract_members(path, out, limits)
    return caught.value


def extracted_files(tmp_path: Path) -> list[Path]:
    out = tmp_path / "out"
    return sorted(out.iterdir()) if out.exists() else []


# --- what is extracted -----------------------------------------------------------------------


def test_extracts_data_members_under_generated_names_with_size_and_hash(tmp_path: Path) -> None:
    other = b"x;y\n5;6\n"
    path = write(tmp_path, make_zip([("sales/2024.csv", CSV), ("Other.TSV", other)]))
    out = tmp_path / "out"
    out.mkdir()

    members = extract_members(path, out, LIMITS)

    assert [m.name for m in members] == ["sales/2024.csv", "Other.TSV"]
    assert [m.path for m in members] == [out / "member-0.csv", out / "member-1.tsv"]
    assert [m.size for m in members] == [len(CSV), len(other)]
    assert [m.sha256 for m in members] == [
        hashlib.sha256(CSV).hexdigest(),
        hashlib.sha256(other).hexdigest(),
    ]
    assert (out / "member-0.csv").read_bytes() == CSV
    assert (out / "member-1.tsv").read_bytes() == other
    assert sorted(p.name for p in out.iterdir()) == ["member-0.csv", "member-1.tsv"]


def test_skips_directories_and_operating_system_junk(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        make_zip(
            [
                ("data/", b""),
                ("__MACOSX/data/._people.csv", b"\x00\x05\x16\x07junk"),
                (".DS_Store", b"\x00\x00\x00\x01Bud1"),
                ("data/.hidden.csv", CSV),
                ("data/Thumbs.db", b"junk"),
                ("data/desktop.ini", b"[.ShellClassInfo]"),
                ("data/people.csv", CSV),
            ]
        ),
    )
    out = tmp_path / "out"
    out.mkdir()

    members = extract_members(path, out, LIMITS)

    assert [(m.name, m.path.name) for m in members] == [("data/people.csv", "member-6.csv")]
    assert [p.name for p in out.iterdir()] == ["member-6.csv"]


@pytest.mark.parametrize(
    ("name", "junk"),
    [
        ("__MACOSX/x.csv", True),
        ("a/.DS_Store", True),
        ("THUMBS.DB", True),
        ("dir\\.hidden.csv", True),
        ("data.csv", False),
        ("MACOSX/data.csv", False),
        ("dir/data.csv", False),
    ],
)
def test_is_junk(name: str, junk: bool) -> None:
    assert is_junk(name) is junk


def test_an_archive_of_only_junk_has_no_data_files(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([("__MACOSX/._a.csv", b"x"), (".DS_Store", b"y")]))

    error = refuse(path)

    assert (error.status_code, error.message) == (422, "The archive contains no data files.")


def test_a_dotted_name_that_is_not_a_parent_reference_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([("sales..2024/v1..final.csv", CSV)]))
    out = tmp_path / "out"
    out.mkdir()

    [member] = extract_members(path, out, LIMITS)

    assert member.name == "sales..2024/v1..final.csv"
    assert member.path.read_bytes() == CSV


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, b"PK\x03\x04 this is not really a zip archive")

    error = refuse(path)

    assert (error.status_code, error.message) == (422, "The archive is not a valid ZIP file.")


# --- unsafe entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "/etc/cron.d/evil.csv",
        "../evil.csv",
        "data/../../evil.csv",
        "..\\..\\evil.csv",
        "\\windows\\evil.csv",
        "C:\\Users\\evil.csv",
        "c:/evil.csv",
        "D:evil.csv",
    ],
)
def test_unsafe_paths_are_refused_before_anything_is_extracted(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, make_zip([("good.csv", CSV), (zipfile.ZipInfo(name), CSV)]))

    error = refuse(path)

    assert error.status_code == 422
    assert error.message == f"The archive entry '{name}' has an unsafe path."
    assert extracted_files(tmp_path) == []
    assert not (tmp_path.parent / "evil.csv").exists()


def test_a_nul_byte_in_an_entry_name_is_refused(tmp_path: Path) -> None:
    # zipfile cuts names at NUL when it reads them ("data.csv\0../x" would pass as
    # "data.csv"); the name as stored in the archive is what must be judged.
    name = b"data.csv\x00../x.sh"
    placeholder = "p" * (len(name) - 4) + ".csv"
    data = rename_entry(make_zip([(placeholder, CSV)]), placeholder, name)
    path = write(tmp_path, data)

    error = refuse(path)

    assert error.status_code == 422
    assert error.message == "The archive entry 'data.csv\\x00../x.sh' has an unsafe path."
    assert extracted_files(tmp_path) == []


def test_symbolic_links_are_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("passwd.csv")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = write(tmp_path, make_zip([("good.csv", CSV), (link, b"/etc/passwd")]))

    error = refuse(path)

    assert (error.status_code, error.message) == (
        422,
        "The archive entry 'passwd.csv' is a symbolic link.",
    )
    assert extracted_files(tmp_path) == []


def test_encrypted_entries_are_refused(tmp_path: Path) -> None:
    data = patch_headers(make_zip([("secret.csv", CSV)]), _LOCAL_FLAGS, _CENTRAL_FLAGS, 0x1)
    path = write(tmp_path, data)

    error = refuse(path)

    assert (error.status_code, error.message) == (
        422,
        "The archive entry 'secret.csv' is encrypted.",
    )


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([(f"part-{i}.csv", CSV) for i in range(4)]))

    error = refuse(path, ZipLimits(max_entries=3, max_uncompressed=2048 * MB, max_ratio=100))

    assert (error.status_code, error.message) == (
        422,
        "The archive has 4 entries; at most 3 are accepted.",
    )
    assert extracted_files(tmp_path) == []


def test_entry_count_at_the_limit_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([(f"part-{i}.csv", CSV) for i in range(3)]))
    out = tmp_path / "out"
    out.mkdir()

    members = extract_members(
        path, out, ZipLimits(max_entries=3, max_uncompressed=2048 * MB, max_ratio=100)
    )

    assert len(members) == 3


def test_declared_total_over_the_limit_is_413(tmp_path: Path) -> None:
    # Two entries of 1.5 MB each (stored, so no ratio involved) against a 2 MB cap.
    chunk = b"1,2\n" * (3 * MB // 8)
    path = write(tmp_path, make_zip([("a.csv", chunk), ("b.csv", chunk)], zipfile.ZIP_STORED))

    error = refuse(path, ZipLimits(max_entries=100, max_uncompressed=2 * MB, max_ratio=100))

    assert error.status_code == 413
    assert error.code == "payload_too_large"
    assert error.message == "The archive would expand to 3 MB; at most 2 MB are accepted."
    assert extracted_files(tmp_path) == []


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """200 MB of zeros, deflated to about 200 KB."""
    return zip_bomb_bytes()


def test_a_zip_bomb_is_refused_by_its_ratio_without_inflating_it(
    tmp_path: Path, zip_bomb: bytes
) -> None:
    assert len(zip_bomb) < 1 * MB
    path = write(tmp_path, zip_bomb)

    error = refuse(path)

    assert error.status_code == 422
    assert error.message.startswith("The archive entry 'bomb.csv' expands ")
    assert error.message.endswith("-fold (more than 100); it looks like a ZIP bomb.")
    assert extracted_files(tmp_path) == []


def test_a_highly_compressible_small_file_is_not_a_bomb(tmp_path: Path) -> None:
    # 512 KB of one repeated row compresses more than 100-fold but is harmless.
    data = b"a,b\n" + b"0,0\n" * (128 * 1024)
    path = write(tmp_path, make_zip([("small.csv", data)]))
    out = tmp_path / "out"
    out.mkdir()

    [member] = extract_members(path, out, LIMITS)

    assert member.size == len(data)


def test_open_checked_labels_workbooks(tmp_path: Path) -> None:
    path = write(tmp_path, make_zip([(f"xl/sheet{i}.xml", b"<x/>") for i in range(3)]))

    with pytest.raises(APIError) as caught:
        open_checked(path, ZipLimits(2, 2048 * MB, 100), label="workbook")

    assert caught.value.message == "The workbook has 3 entries; at most 2 are accepted."


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_member_inflating_beyond_its_declared_size_stops_extraction(
    tmp_path: Path, compression: int
) -> None:
    # The central directory and the local header both claim 1000 bytes; the entry really
    # holds 2 MB. The declared size passes every check made before extraction.
    payload = b"a,b\n" + b"1,2\n" * (MB // 2)
    data = patch_headers(
        make_zip([("liar.csv", payload)], compression), _LOCAL_SIZE, _CENTRAL_SIZE, 1000
    )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.getinfo("liar.csv").file_size == 1000
    path = write(tmp_path, data)

    error = refuse(path)

    assert error.status_code == 422
    assert "liar.csv" in error.message
    assert "corrupt or malicious" in error.message
    for leftover in extracted_files(tmp_path):
        assert leftover.stat().st_size <= 1000


def test_a_lying_member_after_good_ones_still_fails_the_whole_archive(tmp_path: Path) -> None:
    payload = b"a,b\n" + b"1,2\n" * (MB // 2)
    data = make_zip([("good.csv", CSV), ("liar.csv", payload)])
    data = patch_headers(data, _LOCAL_SIZE, _CENTRAL_SIZE, 1000, only="liar.csv")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert [i.file_size for i in archive.infolist()] == [len(CSV), 1000]
    path = write(tmp_path, data)

    error = refuse(path)

    assert error.status_code == 422
    assert "liar.csv" in error.message
    for leftover in extracted_files(tmp_path):
        assert leftover.stat().st_size <= 1000
