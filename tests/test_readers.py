"""read_image_file: every format into float32 with the right axes and spacing; errors name the file.

All inputs are generated in tmp_path or shipped with pydicom and nibabel; nothing is downloaded.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medlens.data.readers import IMAGE_SUFFIXES, LoadedImage, image_kind, read_image_file
from medlens.errors import DataError

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def dicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom does not ship {name}")
    return Path(path)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height pixels but holds one tiny IDAT: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))
    return path


def gradient(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (y * 255 // (h - 1) + x * 0).astype(np.uint8), (x * 255 // (w - 1)).astype(np.uint8)


# --- suffixes -----------------------------------------------------------------------------------


def test_image_kind_by_suffix(tmp_path):
    assert image_kind("a/scan.nii.gz") == "nifti"
    assert image_kind("scan.NII.GZ") == "nifti"
    assert image_kind("scan.nii") == "nifti"
    assert image_kind("x.PNG") == "png"
    assert image_kind("x.jpg") == image_kind("x.jpeg") == "jpeg"
    assert image_kind("x.tif") == image_kind("x.tiff") == "tiff"
    assert image_kind("x.dcm") == image_kind("x.DICOM") == "dicom"
    assert image_kind("x.npy") == "npy"
    assert image_kind("x.gz") is None and image_kind("x.xyz") is None
    assert {".nii.gz", ".dcm", ".dicom", ".png", ".npy", ""} <= IMAGE_SUFFIXES


def test_suffixless_dicom_is_sniffed(tmp_path):
    dcm = shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "IM0001")
    uid_named = shutil.copy(dicom_file("CT_small.dcm"), tmp_path / "1.2.840.113619.2.55.3")
    assert image_kind(dcm) == image_kind(uid_named) == "dicom"
    assert read_image_file(dcm).array.shape == (128, 128)
    text = tmp_path / "README"
    text.write_text("not an image\n")
    assert image_kind(text) is None
    with pytest.raises(DataError, match="README has no suffix and is not a DICOM"):
        read_image_file(text)


# --- Pillow and tifffile ------------------------------------------------------------------------


def test_gray_png_8bit(tmp_path):
    gray = gradient()[0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    img = read_image_file(tmp_path / "g.png")
    assert isinstance(img, LoadedImage)
    assert img.kind == "png" and img.spacing is None and img.window is None
    assert img.array.dtype == np.float32 and img.array.shape == gray.shape
    np.testing.assert_array_equal(img.array, gray)


def test_png_16bit_keeps_values(tmp_path):
    arr = np.linspace(0, 60000, 30 * 40).reshape(30, 40).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    img = read_image_file(tmp_path / "d.png")
    assert img.array.shape == (30, 40)
    assert img.array.max() == 60000.0  # no rescale to 8 bit
    np.testing.assert_array_equal(img.array, arr.astype(np.float32))


def test_rgb_jpeg(tmp_path):
    a, b = gradient()
    rgb = np.stack([a, b, 255 - a], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    img = read_image_file(tmp_path / "c.jpg")
    assert img.kind == "jpeg" and img.array.shape == (32, 48, 3)
    assert np.abs(img.array - rgb).mean() < 3


def test_rgba_png_becomes_rgb(tmp_path):
    a, b = gradient()
    rgba = np.stack([a, b, 255 - a, np.full_like(a, 128)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image_file(tmp_path / "a.png")
    assert img.array.shape == (32, 48, 3)
    np.testing.assert_array_equal(img.array, rgba[..., :3])


def test_palette_cmyk_bmp_and_exif(tmp_path):
    a, b = gradient()
    Image.fromarray(a).convert("P").save(tmp_path / "gray_palette.png")  # gray entries: 2D
    assert read_image_file(tmp_path / "gray_palette.png").array.shape == (32, 48)
    rgb = Image.fromarray(np.stack([a, b, 255 - a], axis=-1))
    rgb.quantize(16).save(tmp_path / "colour_palette.png")
    assert read_image_file(tmp_path / "colour_palette.png").array.shape == (32, 48, 3)
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image_file(tmp_path / "cmyk.jpg").array.shape == (32, 48, 3)
    rgb.save(tmp_path / "c.bmp")
    np.testing.assert_array_equal(read_image_file(tmp_path / "c.bmp").array, np.asarray(rgb))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to view": a phone photo taken upright
    rgb.save(tmp_path / "rotated.jpg", exif=exif)
    img = read_image_file(tmp_path / "rotated.jpg")
    assert img.array.shape == (48, 32, 3) and img.meta["exif_transposed"] is True


def test_tiff_16bit_and_float(tmp_path):
    arr16 = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100
    Image.fromarray(arr16).save(tmp_path / "d16.tif")
    img = read_image_file(tmp_path / "d16.tif")
    assert img.kind == "tiff"
    np.testing.assert_array_equal(img.array, arr16.astype(np.float32))

    f32 = np.linspace(-3.5, 7.25, 20 * 30, dtype=np.float32).reshape(20, 30)
    tifffile.imwrite(tmp_path / "f32.tiff", f32)
    np.testing.assert_array_equal(read_image_file(tmp_path / "f32.tiff").array, f32)

    f64 = np.linspace(-1, 1, 12, dtype=np.float64).reshape(3, 4)  # Pillow cannot read float64
    tifffile.imwrite(tmp_path / "f64.tif", f64)
    np.testing.assert_allclose(read_image_file(tmp_path / "f64.tif").array, f64, rtol=1e-6)


def test_tiff_stacks_and_16bit_colour(tmp_path):
    stack = np.arange(4 * 8 * 10, dtype=np.uint16).reshape(4, 8, 10) * 150
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")  # pages: a volume
    img = read_image_file(tmp_path / "stack.tif")
    assert img.array.shape == (4, 8, 10) and img.meta["n_frames"] == 4
    np.testing.assert_array_equal(img.array, stack.astype(np.float32))

    rgb16 = (np.arange(8 * 10 * 3, dtype=np.uint16).reshape(8, 10, 3) * 200).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    img = read_image_file(tmp_path / "rgb16.tif")  # Pillow would keep only 8 bits
    assert img.array.shape == (8, 10, 3)
    np.testing.assert_array_equal(img.array, rgb16.astype(np.float32))

    u32 = np.array([[0, 1], [2**31 + 5, 2**32 - 1]], dtype=np.uint32)
    tifffile.imwrite(tmp_path / "u32.tif", u32)
    u32_read = read_image_file(tmp_path / "u32.tif").array  # no wrap-around to negative
    np.testing.assert_array_equal(u32_read, u32.astype(np.float32))

    rgb_pages = np.stack([rgb16, rgb16 // 2]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb_pages.tif", rgb_pages, photometric="rgb")
    img = read_image_file(tmp_path / "rgb_pages.tif")  # colour pages: a gray volume
    assert img.array.shape == (2, 8, 10) and img.meta["converted_to_gray"] is True


def test_npy_2d_3d_and_nonfinite(tmp_path):
    a2 = np.arange(12, dtype=np.int16).reshape(3, 4)
    a3 = np.linspace(0, 1, 2 * 3 * 4).reshape(2, 3, 4)
    np.save(tmp_path / "a2.npy", a2)
    np.save(tmp_path / "a3.npy", a3)
    img2, img3 = read_image_file(tmp_path / "a2.npy"), read_image_file(tmp_path / "a3.npy")
    assert img2.kind == "npy" and img2.array.dtype == np.float32
    np.testing.assert_array_equal(img2.array, a2)
    np.testing.assert_allclose(img3.array, a3, rtol=1e-6)

    partly = np.array([[1.0, np.nan], [np.inf, -2.0]], dtype=np.float32)
    np.save(tmp_path / "partly.npy", partly)
    img = read_image_file(tmp_path / "partly.npy")
    np.testing.assert_array_equal(img.array, [[1.0, -2.0], [-2.0, -2.0]])
    assert img.meta["nan_fraction"] == 0.5

    np.save(tmp_path / "nan.npy", np.full((3, 3), np.nan))
    with pytest.raises(DataError, match="nan.npy holds only NaN values"):
        read_image_file(tmp_path / "nan.npy")
    np.save(tmp_path / "4d.npy", np.zeros((2, 2, 2, 2)))
    with pytest.raises(DataError, match="4d.npy holds a float64 array of shape"):
        read_image_file(tmp_path / "4d.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="objects.npy holds Python objects"):
        read_image_file(tmp_path / "objects.npy")
    np.save(tmp_path / "cut.npy", np.zeros((50, 50)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:500])
    with pytest.raises(DataError, match="cut.npy is truncated"):
        read_image_file(tmp_path / "cut.npy")
    np.savez(tmp_path / "archive.npz", a=a2)
    shutil.move(tmp_path / "archive.npz", tmp_path / "archive.npy")
    with pytest.raises(DataError, match="archive.npy is an .npz archive"):
        read_image_file(tmp_path / "archive.npy")


# --- decompression bombs ------------------------------------------------------------------------


def test_png_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 50_000, 50_000)
    assert bomb.stat().st_size < 100
    start = time.perf_counter()
    with pytest.raises(DataError, match="bomb.png") as info:
        read_image_file(bomb)
    assert time.perf_counter() - start < 1.0  # refused before any decoding
    assert "2500000000" in str(info.value)  # the size it claims

    # under Pillow's own limit but over ours: our header check, with size and limit
    big = png_header_only(tmp_path / "big.png", 9000, 9000)
    with pytest.raises(DataError, match=r"big.png is 9000 x 9000 = 81,000,000 pixels") as info:
        read_image_file(big, max_pixels=10**6)
    assert "1,000,000" in str(info.value)


def test_max_pixels_for_dicom_and_npy(tmp_path):
    with pytest.raises(DataError, match="CT_small.dcm is 128 x 128"):
        read_image_file(dicom_file("CT_small.dcm"), max_pixels=1000)
    np.save(tmp_path / "v.npy", np.zeros((10, 10, 10), np.uint8))
    with pytest.raises(DataError, match="v.npy is 10 x 10 x 10"):
        read_image_file(tmp_path / "v.npy", max_pixels=999)


# --- DICOM --------------------------------------------------------------------------------------


def test_ct_dicom_in_hounsfield_units():
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_image_file(path)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert intercept != 0
    expected = ds.pixel_array.astype(np.float64) * slope + intercept
    assert img.kind == "dicom" and img.array.shape == (128, 128)
    np.testing.assert_array_equal(img.array, expected.astype(np.float32))
    assert img.array.min() == ds.pixel_array.min() * slope + intercept  # HU, not stored values
    assert img.meta["rescaled"] is True and img.meta["modality"] == "CT"
    assert img.spacing == tuple(float(v) for v in ds.PixelSpacing)
    if "WindowCenter" in ds:
        assert img.window is not None
    else:
        assert img.window is None


def test_dicom_meta_holds_nothing_identifying(tmp_path):
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    secrets = [str(ds.PatientName), str(ds.PatientID)]
    for key in ("PatientBirthDate", "StudyDate", "AccessionNumber", "InstitutionName"):
        if ds.get(key):
            secrets.append(str(ds.get(key)))
    img = read_image_file(path)
    text = repr(img) + str(img.meta)
    assert all(s and s not in text for s in secrets[:2])
    assert not any(s in text for s in secrets if len(s) > 3)

    del ds.PixelData  # the error message names the file only
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(DataError) as info:
        read_image_file(tmp_path / "nopixels.dcm")
    assert not any(s in str(info.value) for s in secrets if len(s) > 3)


def test_pydicom_log_records_are_held_back_while_reading(tmp_path, monkeypatch, caplog):
    """pydicom quotes malformed values in its log; in a corrupt file they can hold names."""
    path = dicom_file("CT_small.dcm")
    secret = str(pydicom.dcmread(path).PatientID)
    real_dcmread = pydicom.dcmread

    def dcmread_that_logs(*args, **kwargs):
        logging.getLogger("pydicom").warning("Invalid value for VR UI: '%s'", secret)
        return real_dcmread(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", dcmread_that_logs)
    with caplog.at_level(logging.DEBUG):
        img = read_image_file(path)
    assert img.meta["header_warnings"] == 1
    assert secret not in caplog.text
    logging.getLogger("pydicom").warning("outside medlens")  # other pydicom logging untouched
    assert "outside medlens" in caplog.text

    ds = pydicom.dcmread(path)  # a technical field holding something else is not copied
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: not a valid Code String
        ds.Modality = f"ct of {secret}"
    ds.save_as(tmp_path / "odd_modality.dcm")
    img = read_image_file(tmp_path / "odd_modality.dcm")
    assert "modality" not in img.meta and secret not in repr(img)


def test_mr_dicom_window_from_file():
    path = dicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_image_file(path)
    assert img.array.shape == (64, 64) and img.meta["rescaled"] is False
    np.testing.assert_array_equal(img.array, ds.pixel_array.astype(np.float32))
    wc, ww = ds.WindowCenter, ds.WindowWidth
    wc = wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc
    ww = ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww
    assert img.window == (float(wc), float(ww))
    assert img.spacing == tuple(float(v) for v in ds.PixelSpacing)


def test_rtdose_multiframe_is_a_volume():
    path = dicom_file("rtdose.dcm")
    ds = pydicom.dcmread(path)
    img = read_image_file(path)
    assert img.array.ndim == 3 and img.array.shape[0] == int(ds.NumberOfFrames)
    assert img.meta["n_frames"] == int(ds.NumberOfFrames)
    np.testing.assert_allclose(img.array, ds.pixel_array * float(ds.DoseGridScaling), rtol=1e-6)
    assert img.spacing == (5.0, *(float(v) for v in ds.PixelSpacing))  # GridFrameOffsetVector


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(tmp_path / "mono1.dcm")
    plain = read_image_file(dicom_file("CT_small.dcm")).array
    img = read_image_file(tmp_path / "mono1.dcm")
    lo, hi = plain.min(), plain.max()
    np.testing.assert_array_equal(img.array, hi + lo - plain)
    assert img.meta["inverted"] is True
    assert img.window == (float(hi + lo - 40), 400.0)  # the same tissue range, mirrored


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "empty_image.dcm")
    with pytest.raises(DataError, match="empty_image.dcm has no pixel data"):
        read_image_file(tmp_path / "empty_image.dcm")


def test_colour_and_palette_dicom():
    rgb = read_image_file(dicom_file("SC_rgb_small_odd.dcm"))
    assert rgb.array.shape == (3, 3, 3) and rgb.meta["photometric"] == "RGB"
    palette = read_image_file(dicom_file("examples_palette.dcm"))
    assert palette.array.ndim == 3 and palette.array.shape[-1] == 3
    cine = read_image_file(dicom_file("SC_rgb_rle_2frame.dcm"))  # colour frames: gray volume
    assert cine.array.shape == (2, 100, 100) and cine.meta["converted_to_gray"] is True


def test_enhanced_dicom_rescale_from_functional_groups(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    slope, intercept = ds.RescaleSlope, ds.RescaleIntercept
    del ds.RescaleSlope, ds.RescaleIntercept
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = slope, intercept
    group = Dataset()
    group.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([group])
    ds.save_as(tmp_path / "enhanced.dcm")
    img = read_image_file(tmp_path / "enhanced.dcm")
    assert img.meta["rescaled"] is True
    np.testing.assert_array_equal(img.array, read_image_file(dicom_file("CT_small.dcm")).array)


def test_compressed_dicom_without_decoder_names_the_syntax():
    path = dicom_file("MR_small_jpeg_ls_lossless.dcm")
    try:
        pydicom.dcmread(path).pixel_array  # noqa: B018
    except Exception:
        pass
    else:
        pytest.skip("a JPEG-LS decoder is installed")
    with pytest.raises(DataError, match="MR_small_jpeg_ls_lossless.dcm: its pixel data") as info:
        read_image_file(path)
    assert "JPEG-LS" in str(info.value) and "pylibjpeg" in str(info.value)


def test_truncated_dicom():
    with pytest.raises(DataError, match="MR_truncated.dcm: its pixel data is incomplete"):
        read_image_file(dicom_file("MR_truncated.dcm"))


# --- NIfTI --------------------------------------------------------------------------------------


def test_nifti_4d_gives_first_volume():
    path = NIB_DATA / "example4d.nii.gz"
    ref = nib.load(path)
    img = read_image_file(path)
    assert img.kind == "nifti" and img.meta["n_volumes"] == ref.shape[3]
    x, y, z = ref.shape[:3]
    assert img.array.shape == (z, y, x) and len(img.spacing) == 3
    zooms = ref.header.get_zooms()
    np.testing.assert_allclose(img.spacing, (zooms[2], zooms[1], zooms[0]))
    canonical = nib.as_closest_canonical(ref).get_fdata()[..., 0]
    np.testing.assert_allclose(img.array, canonical.transpose(2, 1, 0), rtol=1e-6)


def test_nifti_anatomical():
    img = read_image_file(NIB_DATA / "anatomical.nii")
    assert img.array.shape == (25, 41, 33) and img.spacing == (2.0, 2.0, 2.0)


def test_nifti_axes_and_spacing_follow_the_transpose(tmp_path):
    x, y, z = np.meshgrid(np.arange(5), np.arange(6), np.arange(7), indexing="ij")
    vol = (100 * x + 10 * y + z).astype(np.float32)  # value says where it sits
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "ras.nii.gz")
    img = read_image_file(tmp_path / "ras.nii.gz")
    assert img.array.shape == (7, 6, 5) and img.spacing == (4.0, 3.0, 2.0)
    assert img.array[3, 2, 1] == 100 * 1 + 10 * 2 + 3  # array[z, y, x]

    # stored left-to-right flipped (LAS): RAS reorientation flips x back
    nib.save(nib.Nifti1Image(vol, np.diag([-2.0, 3.0, 4.0, 1.0])), tmp_path / "las.nii")
    las = read_image_file(tmp_path / "las.nii")
    assert las.meta["orientation"] == "LAS" and las.spacing == (4.0, 3.0, 2.0)
    np.testing.assert_array_equal(las.array, img.array[:, :, ::-1])

    # axes stored as (z, y, x) on disk: the affine says so, the result is the same layout
    swapped = np.ascontiguousarray(vol.transpose(2, 1, 0))
    affine = np.array([[0, 0, 2.0, 0], [0, 3.0, 0, 0], [4.0, 0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(swapped, affine), tmp_path / "swapped.nii.gz")
    sw = read_image_file(tmp_path / "swapped.nii.gz")
    assert sw.spacing == (4.0, 3.0, 2.0)
    np.testing.assert_array_equal(sw.array, img.array)


def test_nifti_2d_and_single_slice(tmp_path):
    plane = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)  # (x, y)
    affine = np.diag([0.5, 0.7, 3.0, 1.0])
    nib.save(nib.Nifti1Image(plane, affine), tmp_path / "plane.nii")
    nib.save(nib.Nifti1Image(plane[..., None], affine), tmp_path / "slice.nii.gz")
    for name in ("plane.nii", "slice.nii.gz"):
        img = read_image_file(tmp_path / name)
        assert img.array.shape == (6, 5) and img.spacing == pytest.approx((0.7, 0.5))
        np.testing.assert_array_equal(img.array, plane.T)


def test_nifti_nan(tmp_path):
    affine = np.eye(4)
    nib.save(nib.Nifti1Image(np.full((4, 4, 3), np.nan, np.float32), affine), tmp_path / "n.nii")
    with pytest.raises(DataError, match="n.nii holds only NaN values"):
        read_image_file(tmp_path / "n.nii")
    vol = np.arange(48, dtype=np.float32).reshape(4, 4, 3) + 5
    vol[0, 0, 0] = vol[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "p.nii.gz")
    img = read_image_file(tmp_path / "p.nii.gz")
    assert np.isfinite(img.array).all() and img.array.min() == 6.0  # min finite value
    assert img.meta["nan_fraction"] == pytest.approx(2 / 48, abs=1e-6)


# --- broken inputs ------------------------------------------------------------------------------


def _zero_byte(tmp_path):
    (tmp_path / "zero.png").touch()
    return tmp_path / "zero.png", "zero.png is an empty file"


def _text_png(tmp_path):
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    return tmp_path / "text.png", "text.png is not a readable PNG"


def _truncated_png(tmp_path):
    a, b = gradient(64, 64)
    Image.fromarray(np.stack([a, b, a], -1)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:100])
    return tmp_path / "cut.png", "cut.png is not a readable PNG"


def _truncated_nifti(tmp_path):
    vol = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "full.nii.gz")
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.nii.gz", "cut.nii.gz is truncated or corrupt"


def _text_dcm(tmp_path):
    (tmp_path / "text.dcm").write_text("PatientName: nobody\n" * 20)
    return tmp_path / "text.dcm", "text.dcm is not a DICOM file"


def _unknown_suffix(tmp_path):
    (tmp_path / "image.xyz").write_bytes(b"\0" * 64)
    return tmp_path / "image.xyz", "image.xyz has a suffix medlens does not read (.xyz)"


def _missing(tmp_path):
    return tmp_path / "missing.png", "missing.png does not exist"


def _folder(tmp_path):
    (tmp_path / "folder.png").mkdir()
    return tmp_path / "folder.png", "folder.png is not a file"


def _bomb(tmp_path):
    return png_header_only(tmp_path / "huge.png", 50_000, 50_000), "huge.png is too large"


def _truncated_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "full.tif", np.ones((64, 64), np.uint16))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "full.tif").read_bytes()[:200])
    return tmp_path / "cut.tif", "cut.tif is not a readable TIFF"


def _text_npy(tmp_path):
    (tmp_path / "text.npy").write_text("1, 2, 3\n")
    return tmp_path / "text.npy", "text.npy is not a .npy array file"


@pytest.mark.filterwarnings("ignore:Truncated File Read")
@pytest.mark.parametrize(
    "make",
    [
        _zero_byte,
        _text_png,
        _truncated_png,
        _truncated_nifti,
        _text_dcm,
        _unknown_suffix,
        _missing,
        _folder,
        _bomb,
        _truncated_tiff,
        _text_npy,
    ],
)
def test_broken_inputs_raise_data_error_naming_the_file(tmp_path, make):
    path, expected = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_image_file(path)
    message = str(info.value)
    assert str(path) in message and expected in message
    assert info.value.hint  # says how to fix it
    assert "Traceback" not in message


def test_png_16bit_colour_is_flagged(tmp_path):
    """Pillow decodes 16-bit colour PNGs to their high byte; the reader says so in meta."""
    h, w = 4, 5
    arr = (np.arange(h * w * 3).reshape(h, w, 3) * 1000).astype(">u2")
    raw = b"".join(b"\0" + arr[i].tobytes() for i in range(h))  # filter 0, big-endian rows
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16-bit RGB
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
    (tmp_path / "rgb16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))
    img = read_image_file(tmp_path / "rgb16.png")
    assert img.array.shape == (h, w, 3) and img.meta["reduced_to_8_bit"] is True
    np.testing.assert_array_equal(img.array, (arr >> 8).astype(np.float32))


def test_dicom_voi_lut_sequence_is_applied_by_window_file(tmp_path):
    """A non-linear VOI LUT (here a square law over 0..2047 HU) replaces the linear window."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from medlens.data.preprocess import PreprocessConfig, preprocess

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    item = Dataset()
    item.add_new(0x00283002, "US", [2048, 0, 16])  # LUTDescriptor: entries, first value, bits
    table = np.round((np.arange(2048) / 2047.0) ** 2 * 65535).astype(np.uint16)
    item.add_new(0x00283006, "US", table.tolist())  # LUTData
    ds.VOILUTSequence = Sequence([item])
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            del ds[keyword]
    ds.save_as(tmp_path / "voi.dcm")
    img = read_image_file(tmp_path / "voi.dcm")
    expected = (np.clip(img.array, 0, 2047) / 2047) ** 2
    assert img.meta["voi_lut"] and np.abs(img.voi - expected).max() < 1e-4
    out = preprocess(
        img.array, PreprocessConfig(size=[128, 128], window="file"), window=img.window, voi=img.voi
    )
    assert np.abs(out[0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    plain = read_image_file(get_testdata_file("CT_small.dcm"))
    assert plain.voi is None and "voi_lut" not in plain.meta
