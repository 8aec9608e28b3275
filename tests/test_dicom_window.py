"""``window: file`` applies a DICOM's own window as its VOI LUT Function says (LINEAR,
LINEAR_EXACT, SIGMOID), exactly as pydicom's ``apply_windowing`` computes it."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medlens.data.preprocess import PreprocessConfig, apply_file_window, preprocess_image
from medlens.data.readers import read_image_file
from medlens.errors import DataError

SIDE = 64
INTERCEPT = -1024.0  # stored 0..4095 (12 bits, unsigned) are -1024..3071 HU
LOWEST, HIGHEST = 0 * 1.0 + INTERCEPT, 4095 * 1.0 + INTERCEPT  # pydicom's output range


def ct_file(path, function: str | None, photometric: str = "MONOCHROME2", center=40, width=350):
    """A 64 x 64 CT slice holding every stored value 0..4095 once, with a window."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "CT"
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, INTERCEPT
    ds.WindowCenter, ds.WindowWidth = center, width
    if function is not None:
        ds.VOILUTFunction = function
    stored = np.random.default_rng(0).permutation(4096).astype(np.uint16).reshape(SIDE, SIDE)
    ds.PixelData = stored.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def pydicom_uint8(path, inverted: bool = False) -> np.ndarray:
    """pydicom's own windowing of the file, scaled to uint8 as medlens scales [0, 1]."""
    ds = pydicom.dcmread(path)
    windowed = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    unit = (windowed - LOWEST) / (HIGHEST - LOWEST)
    unit = (1.0 - unit if inverted else unit).astype(np.float32)
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def medlens_uint8(path) -> np.ndarray:
    img = read_image_file(path)
    cfg = PreprocessConfig(size=[SIDE, SIDE], window="file")
    return preprocess_image(img, cfg)[0]


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_file_window_is_pydicoms_for_each_voi_lut_function(tmp_path, function):
    path = ct_file(tmp_path / "ct.dcm", function)
    img = read_image_file(path)
    assert img.window == (40.0, 350.0) and img.window_function == function
    np.testing.assert_array_equal(medlens_uint8(path), pydicom_uint8(path))


def test_sigmoid_is_not_linear_and_no_function_means_linear(tmp_path):
    linear = medlens_uint8(ct_file(tmp_path / "linear.dcm", "LINEAR"))
    sigmoid = medlens_uint8(ct_file(tmp_path / "sigmoid.dcm", "SIGMOID"))
    exact = medlens_uint8(ct_file(tmp_path / "exact.dcm", "LINEAR_EXACT"))
    unstated = ct_file(tmp_path / "unstated.dcm", None)
    hu = read_image_file(tmp_path / "linear.dcm").array
    edges = [int(np.flatnonzero(hu.ravel() == v)[0]) for v in (40 - 175, 40 + 175)]  # c -/+ w/2
    # where the ramps clip, the sigmoid is still at 1 / (1 + e^2) = 0.119 of its range
    assert linear.ravel()[edges].tolist() == [0, 255]
    assert sigmoid.ravel()[edges].tolist() == [30, 225]
    assert (sigmoid != linear).sum() > 1000  # of the 4096 values, a quarter differ
    assert 0 < (exact != linear).sum() < 200  # the integer offsets of LINEAR move a few
    assert read_image_file(unstated).window_function == "LINEAR"
    np.testing.assert_array_equal(medlens_uint8(unstated), linear)


@pytest.mark.parametrize("function", ["LINEAR", "SIGMOID"])
def test_monochrome1_is_windowed_then_inverted(tmp_path, function):
    """The reader inverts MONOCHROME1 and mirrors its window; the function applies to the
    original values, then the output is inverted as a viewer shows it."""
    path = ct_file(tmp_path / "mono1.dcm", function, photometric="MONOCHROME1", center=40, width=80)
    assert read_image_file(path).meta["inverted"] is True
    np.testing.assert_array_equal(medlens_uint8(path), pydicom_uint8(path, inverted=True))


def test_window_function_from_the_enhanced_functional_groups(tmp_path):
    path = ct_file(tmp_path / "flat.dcm", None)
    ds = pydicom.dcmread(path)
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = 40, 350, "SIGMOID"
    group = Dataset()
    group.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([group])
    del ds.WindowCenter, ds.WindowWidth
    ds.save_as(tmp_path / "enhanced.dcm")
    img = read_image_file(tmp_path / "enhanced.dcm")
    assert img.window == (40.0, 350.0) and img.window_function == "SIGMOID"
    np.testing.assert_array_equal(
        medlens_uint8(tmp_path / "enhanced.dcm"),
        medlens_uint8(ct_file(tmp_path / "s.dcm", "SIGMOID")),
    )


def test_odd_functions_and_narrow_linear_windows(tmp_path):
    odd = read_image_file(ct_file(tmp_path / "odd.dcm", "LOG"))
    assert odd.window_function == "LINEAR" and odd.meta["window_function_unknown"] is True
    narrow = read_image_file(ct_file(tmp_path / "narrow.dcm", "LINEAR", width=0.5))
    assert narrow.window_function == "LINEAR_EXACT"  # LINEAR needs a width of 1 or more
    assert "LINEAR_EXACT" in narrow.meta["window_function_changed"]
    x = np.array([39.0, 40.0, 41.0])
    assert apply_file_window(x, 40, 0.5, "LINEAR_EXACT").tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(DataError, match="a LINEAR window needs a width of 1 or more, got 0.5"):
        apply_file_window(x, 40, 0.5, "LINEAR")
    with pytest.raises(DataError, match="unknown VOI LUT Function 'LOG'"):
        apply_file_window(x, 40, 400, "LOG")


def test_presets_stay_linear_whatever_the_file_says(tmp_path):
    path = ct_file(tmp_path / "sigmoid.dcm", "SIGMOID")
    img = read_image_file(path)
    cfg = PreprocessConfig(size=[SIDE, SIDE], window="40,350")
    linear = read_image_file(ct_file(tmp_path / "linear.dcm", "LINEAR"))
    np.testing.assert_array_equal(preprocess_image(img, cfg), preprocess_image(linear, cfg))
