"""The reader list: each format's module declares its suffixes and magic bytes, and files go
to a reader by suffix, uploads by content (never by name)."""

from __future__ import annotations

import gzip
import io
import shutil

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file

import medlens.data.readers as readers
from medlens.data.readers import (
    IMAGE_SUFFIXES,
    READERS,
    ImageReader,
    LoadedImage,
    image_kind,
    read_image_bytes,
    read_image_file,
    reader_for,
    sniff_kind,
)
from medlens.errors import DataError


def _pillow_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, fmt)
    return buf.getvalue()


def _tiff_bytes() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(64, dtype=np.uint16).reshape(8, 8))
    return buf.getvalue()


def _nifti_bytes(gzipped: bool) -> bytes:
    img = nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    data = img.to_bytes()
    return gzip.compress(data) if gzipped else data


def _dicom_bytes() -> bytes:
    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        return f.read()


CONTENT = {
    "png": lambda: _pillow_bytes("PNG"),
    "jpeg": lambda: _pillow_bytes("JPEG"),
    "bmp": lambda: _pillow_bytes("BMP"),
    "tiff": _tiff_bytes,
    "dicom": _dicom_bytes,
    "nifti": lambda: _nifti_bytes(False),
    "nifti.gz": lambda: _nifti_bytes(True),
}


def test_every_format_has_one_reader_and_its_suffixes_lead_to_it():
    kinds = [r.kind for r in READERS]
    assert kinds == ["png", "jpeg", "tiff", "bmp", "dicom", "nifti", "npy"]
    suffixes = [s for r in READERS for s in r.suffixes]
    assert len(suffixes) == len(set(suffixes))  # no suffix claimed twice
    assert frozenset(suffixes) | {""} == IMAGE_SUFFIXES
    for reader in READERS:
        assert reader_for(reader.kind) is reader
        for suffix in reader.suffixes:
            assert image_kind(f"case{suffix}") == image_kind(f"CASE{suffix.upper()}") == reader.kind
    # each format lives in its own module (PNG, JPEG and BMP share Pillow's)
    modules = {
        r.kind: getattr(r.read, "func", r.read).__module__.rsplit(".", 1)[-1] for r in READERS
    }
    assert modules == {
        "png": "pil",
        "jpeg": "pil",
        "bmp": "pil",
        "tiff": "tiff",
        "dicom": "dicom",
        "nifti": "nifti",
        "npy": "npy",
    }
    with pytest.raises(ValueError, match="no reader for 'gif'"):
        reader_for("gif")


@pytest.mark.parametrize("name", sorted(CONTENT))
def test_uploads_go_to_a_reader_by_content_not_by_name(name):
    data = CONTENT[name]()
    kind = name.split(".")[0]
    assert sniff_kind(data) == kind
    claimed = [r.kind for r in READERS if r.matches(data)]
    assert claimed == (["tiff", "dicom"] if kind == "dicom" else [kind])  # see the next test
    img = read_image_bytes(data, "misnamed.txt")  # the name plays no part
    assert img.kind == kind and img.array.size > 0


def test_dicom_is_sniffed_before_the_header_its_preamble_may_hold():
    """pydicom's CT_small.dcm is a dual-personality file: a TIFF header in its preamble."""
    data = _dicom_bytes()
    assert data[:4] == b"II*\x00" and data[128:132] == b"DICM"
    assert reader_for("tiff").matches(data) and reader_for("dicom").matches(data)
    assert sniff_kind(data) == "dicom"
    assert read_image_bytes(data).meta["modality"] == "CT"


def test_arrays_and_unknown_content_are_not_uploads():
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 4), np.float32))
    assert reader_for("npy").matches(buf.getvalue())  # its magic is declared ...
    assert sniff_kind(buf.getvalue()) is None  # ... but .npy is for files only
    with pytest.raises(DataError, match="upload is not an image medlens reads"):
        read_image_bytes(buf.getvalue())
    assert sniff_kind(b"\x1f\x8b" + bytes(100)) is None  # gzip that is not a NIfTI


def test_files_go_by_suffix_and_suffixless_ones_by_content(tmp_path):
    jpeg_named_png = tmp_path / "x.png"
    jpeg_named_png.write_bytes(_pillow_bytes("JPEG"))
    assert image_kind(jpeg_named_png) == "png"  # a file's suffix decides its reader
    assert read_image_file(jpeg_named_png).kind == "png"
    dicom = shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    png = tmp_path / "IM0002"
    png.write_bytes(_pillow_bytes("PNG"))
    assert image_kind(dicom) == "dicom"  # DICOM alone is recognised without a suffix
    assert image_kind(png) is None


def test_a_new_format_is_one_reader_in_the_list(tmp_path, monkeypatch):
    """What a format module provides is all the dispatch needs: suffix, magic and read."""
    calls = []

    def read(source, max_pixels):
        calls.append((str(source), max_pixels))
        return LoadedImage(np.ones((2, 3), np.float32), None, "raw")

    raw = ImageReader("raw", "RAW", (".raw",), read, magic=(b"RAW1",), magic_offset=2)
    monkeypatch.setattr(readers, "READERS", (*READERS, raw))
    path = tmp_path / "scan.RAW"
    path.write_bytes(b"..RAW1....")
    assert image_kind(path) == "raw"
    assert read_image_file(path, max_pixels=99).kind == "raw"
    assert read_image_bytes(b"..RAW1....", "up", max_pixels=7).kind == "raw"
    assert calls == [(str(path), 99), ("up", 7)]
    assert sniff_kind(b"RAW1......") is None  # its magic sits at byte 2
