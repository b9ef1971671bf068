"""brain_audit.dicom against pydicom's shipped real files and hand-built defect files.

Expected HU come from outside the code under test: pydicom's own
``apply_modality_lut`` on the same file, or values written by hand into files
built here with pydicom directly (not with brain_audit.dicom.encode_slice).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from brain_audit.dicom import AIR_HU, HEADER_FIELDS, encode_slice, read_header, read_hu
from brain_audit.errors import DicomReadError

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
SHIPPED = CT_SMALL.parent  # the real test files pydicom ships in its wheel (no download)


def _reference_hu(path: Path) -> np.ndarray:
    """HU by pydicom's own Modality LUT, padding and sub-air values set to AIR_HU."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    hu = apply_modality_lut(arr, ds).astype(np.float64)
    if "PixelPaddingValue" in ds:
        hu[arr == ds.PixelPaddingValue] = AIR_HU
    return np.maximum(hu, AIR_HU)


def _save(ds: Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.save_as(path, enforce_file_format=True)
    return path


def _ct_dataset(stored: np.ndarray, *, bits_stored: int, pixrep: int, intercept: float, slope: float = 1.0) -> Dataset:
    """A minimal CT dataset built by hand with pydicom."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "CT"
    ds.PatientID = "ID_test"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixrep
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    ds.PixelData = stored.astype("<i2" if pixrep else "<u2").tobytes()
    return ds


class TestReadHuOnPydicomFiles:
    def test_ct_small_equals_pydicom_modality_lut(self):
        hu = read_hu(CT_SMALL)
        ref = _reference_hu(CT_SMALL)
        assert hu.dtype == np.float32 and hu.shape == (128, 128)
        np.testing.assert_array_equal(hu, ref)

    def test_ct_small_fixed_pixels(self):
        # stored values read with a plain numpy view of the Pixel Data bytes, then the
        # file's own slope 1 and intercept -1024 applied by hand
        ds = pydicom.dcmread(CT_SMALL)
        raw = np.frombuffer(ds.PixelData, dtype="<i2").reshape(128, 128)
        hu = read_hu(CT_SMALL)
        for r, c in [(64, 64), (10, 100), (127, 0), (90, 30)]:
            assert hu[r, c] == max(float(raw[r, c]) * 1.0 - 1024.0, AIR_HU)

    def test_every_shipped_ct_file_reads_exactly_or_raises(self):
        n_ok = 0
        for name in sorted(SHIPPED.glob("*.dcm")):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    modality = pydicom.dcmread(name, force=True).get("Modality")
            except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
                modality = None  # pydicom's own failures on non-CT files are not under test
            if modality != "CT":
                continue
            try:
                hu = read_hu(name)
            except DicomReadError as exc:
                assert Path(name).name in str(exc)
                continue
            np.testing.assert_array_equal(hu, _reference_hu(Path(name)))
            n_ok += 1
        assert n_ok >= 2  # CT_small.dcm and 693_J2KI.dcm at least

    def test_jpeg2000_ct_has_padding_as_air(self):
        path = Path(get_testdata_file("693_J2KI.dcm"))
        ds = pydicom.dcmread(path)
        hu = read_hu(path)
        pad = ds.pixel_array == ds.PixelPaddingValue
        assert pad.any()
        assert np.all(hu[pad] == AIR_HU)
        np.testing.assert_array_equal(hu, _reference_hu(path))

    @pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless], ids=["j2k-lossless", "rle"])
    def test_lossless_twin_gives_identical_hu(self, tmp_path, syntax):
        ds = pydicom.dcmread(CT_SMALL)
        ds.compress(syntax)  # encoded by pylibjpeg-openjpeg / pydicom's RLE encoder
        twin = _save(ds, tmp_path / "twin.dcm")
        assert pydicom.dcmread(twin).file_meta.TransferSyntaxUID == syntax
        np.testing.assert_array_equal(read_hu(twin), read_hu(CT_SMALL))

    def test_not_ct_is_rejected_by_tag(self):
        with pytest.raises(DicomReadError, match=r"MR_small\.dcm: \(0008,0060\) Modality is 'MR'"):
            read_hu(get_testdata_file("MR_small.dcm"))


class TestRsnaWrapDefect:
    HU = np.array([[-1000, -999, -500, -1], [0, 40, 80, 1500], [3095, 2000, 1000, -200]], dtype=np.int32)

    def _defect_file(self, tmp_path: Path) -> Path:
        stored = np.mod(self.HU, 4096)  # 12-bit values whose negatives wrapped modulo 4096
        return _save(_ct_dataset(stored, bits_stored=12, pixrep=0, intercept=0), tmp_path / "ID_defect.dcm")

    def test_defect_is_repaired(self, tmp_path):
        np.testing.assert_array_equal(read_hu(self._defect_file(tmp_path)), self.HU.astype(np.float32))

    def test_naive_read_shows_air_as_bone(self, tmp_path):
        naive = read_hu(self._defect_file(tmp_path), fix_rsna_defect=False)
        assert naive[0, 0] == 3096.0  # air at -1000 HU read as dense bone

    def test_correct_12bit_file_is_left_alone(self, tmp_path):
        # Bits Stored 12 unsigned with the usual intercept -1024 is not the defect
        stored = self.HU + 1024
        path = _save(_ct_dataset(stored, bits_stored=12, pixrep=0, intercept=-1024), tmp_path / "ok.dcm")
        np.testing.assert_array_equal(read_hu(path), self.HU.astype(np.float32))

    def test_encode_slice_defect_round_trip(self, tmp_path):
        hu = self.HU.astype(np.float32)
        data = encode_slice(hu, sop_instance_uid="ID_0", patient_id="ID_p", study_instance_uid="ID_s",
                            series_instance_uid="ID_r", wrap_defect=True)
        path = tmp_path / "e.dcm"
        path.write_bytes(data)
        ds = pydicom.dcmread(path)
        assert (ds.BitsStored, ds.PixelRepresentation, float(ds.RescaleIntercept)) == (12, 0, 0.0)
        np.testing.assert_array_equal(read_hu(path), hu)


class TestModalityLut:
    def test_slope_and_intercept(self, tmp_path):
        stored = np.array([[0, 100], [2000, 4000]], dtype=np.int32)
        path = _save(_ct_dataset(stored, bits_stored=16, pixrep=1, intercept=-1000, slope=0.5), tmp_path / "s.dcm")
        np.testing.assert_array_equal(read_hu(path), np.array([[-1000, -950], [0, 1000]], dtype=np.float32))

    def test_pixel_padding_value_becomes_air(self, tmp_path):
        stored = np.array([[-2000, 1064], [1000, -2000]], dtype=np.int32)
        ds = _ct_dataset(stored, bits_stored=16, pixrep=1, intercept=-1024)
        ds.PixelPaddingValue = -2000
        path = _save(ds, tmp_path / "p.dcm")
        np.testing.assert_array_equal(read_hu(path), np.array([[AIR_HU, 40], [-24, AIR_HU]], dtype=np.float32))

    def test_monochrome1_gives_same_hu_as_monochrome2(self, tmp_path):
        stored = np.array([[0, 1064], [2024, 500]], dtype=np.int32)
        ds = _ct_dataset(stored, bits_stored=16, pixrep=1, intercept=-1024)
        m2 = read_hu(_save(ds, tmp_path / "m2.dcm"))
        ds.PhotometricInterpretation = "MONOCHROME1"
        m1 = read_hu(_save(ds, tmp_path / "m1.dcm"))
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(m2, np.array([[-1024, 40], [1000, -524]], dtype=np.float32))

    def test_missing_rescale_warns_and_assumes_hu(self, tmp_path):
        ds = _ct_dataset(np.array([[40, 80]]), bits_stored=16, pixrep=1, intercept=0)
        del ds.RescaleIntercept, ds.RescaleSlope
        path = _save(ds, tmp_path / "norescale.dcm")
        with pytest.warns(RuntimeWarning, match=r"norescale\.dcm: \(0028,1052\) Rescale Intercept"):
            hu = read_hu(path)
        np.testing.assert_array_equal(hu, np.array([[40, 80]], dtype=np.float32))


class TestBadInput:
    """Every file that cannot give a CT slice raises DicomReadError naming the file."""

    def _ct(self) -> Dataset:
        return pydicom.dcmread(CT_SMALL)

    def test_missing_file(self, tmp_path):
        with pytest.raises(DicomReadError, match=r"nofile\.dcm: cannot open file"):
            read_hu(tmp_path / "nofile.dcm")

    def test_empty_file(self, tmp_path):
        p = tmp_path / "ID_empty.dcm"
        p.write_bytes(b"")
        with pytest.raises(DicomReadError, match=r"ID_empty\.dcm: empty file"):
            read_hu(p)

    def test_not_dicom(self, tmp_path):
        p = tmp_path / "notes.dcm"
        p.write_text("patient looked fine\n" * 50)
        with pytest.raises(DicomReadError, match=r"notes\.dcm: not a"):
            read_hu(p)

    @pytest.mark.parametrize("cut", [200, 1000, 20000, 39000])
    def test_truncated(self, tmp_path, cut):
        p = tmp_path / f"trunc{cut}.dcm"
        p.write_bytes(CT_SMALL.read_bytes()[:cut])
        with pytest.raises(DicomReadError, match=rf"trunc{cut}\.dcm: "):
            read_hu(p)

    def test_pixel_data_shorter_than_declared(self, tmp_path):
        ds = self._ct()
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        p = _save(ds, tmp_path / "short.dcm")
        with pytest.raises(DicomReadError, match=r"short\.dcm: \(7FE0,0010\) Pixel Data has 16384 bytes.*need 32768"):
            read_hu(p)

    def test_header_without_pixel_data(self, tmp_path):
        ds = self._ct()
        del ds.PixelData
        p = _save(ds, tmp_path / "hdr.dcm")
        with pytest.raises(DicomReadError, match=r"hdr\.dcm: \(7FE0,0010\) Pixel Data is missing"):
            read_hu(p)

    def test_colour(self, tmp_path):
        ds = self._ct()
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        p = _save(ds, tmp_path / "rgb.dcm")
        with pytest.raises(DicomReadError, match=r"rgb\.dcm: \(0028,0004\) Photometric Interpretation is 'RGB'"):
            read_hu(p)

    def test_multi_frame(self, tmp_path):
        ds = self._ct()
        ds.NumberOfFrames = 2
        p = _save(ds, tmp_path / "mf.dcm")
        with pytest.raises(DicomReadError, match=r"mf\.dcm: \(0028,0008\) Number of Frames is 2"):
            read_hu(p)

    def test_bits_stored_zero(self, tmp_path):
        ds = self._ct()
        ds.BitsStored = 0
        p = _save(ds, tmp_path / "ID_0a1b.dcm")
        with pytest.raises(DicomReadError, match=r"ID_0a1b\.dcm: \(0028,0101\) Bits Stored is 0; cannot decode pixels"):
            read_hu(p)

    def test_undecodable_compression(self, tmp_path):
        from pydicom.encaps import encapsulate

        ds = self._ct()
        ds.PixelData = encapsulate([b"\xff\xd8 this is not a JPEG stream \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        p = _save(ds, tmp_path / "badjpeg.dcm")
        with pytest.raises(DicomReadError, match=r"badjpeg\.dcm: \(0002,0010\) Transfer Syntax UID JPEG Baseline"):
            read_hu(p)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.integers(min_value=0, max_value=39205), flip=st.integers(min_value=0, max_value=39205))
    @example(cut=141, flip=0)  # file meta cut inside (0002,0000): pydicom's BytesLengthException
    def test_damaged_bytes_never_escape_as_raw_errors(self, tmp_path, cut, flip):
        data = bytearray(CT_SMALL.read_bytes()[:cut])
        if flip < len(data):
            data[flip] ^= 0xFF
        p = tmp_path / "fuzz.dcm"
        p.write_bytes(bytes(data))
        try:
            hu = read_hu(p)
        except DicomReadError as exc:
            assert "fuzz.dcm" in str(exc)
        else:
            assert hu.dtype == np.float32 and hu.ndim == 2


class TestReadHeader:
    def test_fields_of_ct_small(self):
        h = read_header(CT_SMALL)
        ds = pydicom.dcmread(CT_SMALL)
        assert set(h) == set(HEADER_FIELDS) | {"z", "problem"}
        assert h["problem"] is None
        assert (h["samples_per_pixel"], h["bits_allocated"], h["number_of_frames"]) == (1, 16, None)
        assert h["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
        assert h["sop_instance_uid"] == ds.SOPInstanceUID
        assert h["rows"] == 128 and h["columns"] == 128
        assert h["z"] == pytest.approx(float(ds.ImagePositionPatient[2]))
        assert h["pixel_spacing"] == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
        assert h["rescale_intercept"] == -1024.0 and h["rescale_slope"] == 1.0
        assert h["bits_stored"] == 16 and h["pixel_representation"] == 1
        assert h["modality"] == "CT"

    def test_never_returns_identifying_fields(self, tmp_path):
        ds = pydicom.dcmread(CT_SMALL)
        ds.PatientName = "Doe^Jane"
        ds.PatientBirthDate = "19700101"
        ds.PatientAddress = "1 Main Street"
        ds.InstitutionName = "Saint Elsewhere"
        ds.ReferringPhysicianName = "House^Gregory"
        p = _save(ds, tmp_path / "phi.dcm")
        h = read_header(p)
        text = repr(h)
        for secret in ("Doe", "Jane", "19700101", "Main Street", "Elsewhere", "House"):
            assert secret not in text
        assert not {"patient_name", "patient_birth_date", "institution_name"} & set(h)

    def test_rsna_list_window_values(self, tmp_path):
        ds = pydicom.dcmread(CT_SMALL)
        ds.WindowCenter = [40, 40]
        ds.WindowWidth = [80, 80]
        h = read_header(_save(ds, tmp_path / "w.dcm"))
        assert (h["window_center"], h["window_width"]) == (40.0, 80.0)

    def test_does_not_decode_pixels(self, tmp_path):
        # a header-only file still gives its header, with the reason read_hu would refuse it
        ds = pydicom.dcmread(CT_SMALL)
        del ds.PixelData
        h = read_header(_save(ds, tmp_path / "hdr.dcm"))
        assert h["rows"] == 128
        assert h["problem"] == "(7FE0,0010) Pixel Data is missing (header only)"

    def test_does_not_read_pixel_data(self, tmp_path, monkeypatch):
        # the Pixel Data value is skipped (pydicom's deferred read), never loaded
        seen = []
        real = pydicom.dcmread
        monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: seen.append(k.get("defer_size")) or real(*a, **k))
        assert read_header(CT_SMALL)["problem"] is None
        assert seen == [1024]

    @pytest.mark.parametrize("name, edit, reason", [
        ("mr.dcm", None, "(0008,0060) Modality is 'MR'; expected 'CT'"),
        ("rtdose.dcm", None, "(0008,0060) Modality is 'RTDOSE'; expected 'CT'"),
        ("rgb.dcm", {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"},
         "(0028,0004) Photometric Interpretation is 'RGB' with (0028,0002) Samples per Pixel 3; a CT slice is "
         "monochrome"),
        ("mf.dcm", {"NumberOfFrames": 2}, "(0028,0008) Number of Frames is 2; expected one slice per file"),
        ("hdr.dcm", {"PixelData": None}, "(7FE0,0010) Pixel Data is missing (header only)"),
        ("short.dcm", {"PixelData": 16384}, "(7FE0,0010) Pixel Data has 16384 bytes; (0028,0010) Rows x "
         "(0028,0011) Columns x (0028,0100) Bits Allocated need 32768 (file truncated?)"),
        ("cut.dcm", "cut", "(7FE0,0010) Pixel Data has 20000 bytes; (0028,0010) Rows x "
         "(0028,0011) Columns x (0028,0100) Bits Allocated need 32768 (file truncated?)"),
        ("norows.dcm", {"Rows": None}, "(0028,0010) Rows is missing"),
        ("nobits.dcm", {"BitsAllocated": None}, "(0028,0100) Bits Allocated is missing"),
        ("slope.dcm", {"RescaleSlope": "abc"}, "(0028,1053) Rescale Slope is 'abc'; not a number"),
        ("slope0.dcm", {"RescaleSlope": 0}, "(0028,1053) Rescale Slope is 0; HU cannot be recovered"),
    ])
    def test_problem_is_the_reason_read_hu_gives(self, tmp_path, name, edit, reason):
        if name == "mr.dcm":
            p = Path(get_testdata_file("MR_small.dcm"))
        elif name == "rtdose.dcm":
            p = Path(get_testdata_file("rtdose.dcm"))  # 15 frames of RT dose
        elif edit == "cut":  # a file cut 20,000 bytes into its Pixel Data (explicit VR OW: value at tag + 12)
            data = CT_SMALL.read_bytes()
            p = tmp_path / name
            p.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00") + 12 + 20000])
        else:
            ds = pydicom.dcmread(CT_SMALL)
            for kw, v in edit.items():
                if v is None:
                    delattr(ds, kw)
                elif kw == "PixelData":
                    ds.PixelData = ds.PixelData[:v]
                elif kw == "RescaleSlope" and isinstance(v, str):
                    ds.add_new(0x00281053, "LO", v)  # a text where DS numbers belong
                else:
                    setattr(ds, kw, v)
            p = _save(ds, tmp_path / name)
        assert read_header(p)["problem"] == reason
        with pytest.raises(DicomReadError) as exc:
            read_hu(p)
        assert exc.value.reason == reason

    def test_compressed_slice_has_no_problem(self, tmp_path):
        ds = pydicom.dcmread(CT_SMALL)
        ds.compress(RLELossless)
        p = _save(ds, tmp_path / "rle.dcm")
        assert read_header(p)["problem"] is None
        np.testing.assert_array_equal(read_hu(p), read_hu(CT_SMALL))

    def test_bad_file_raises(self, tmp_path):
        p = tmp_path / "ID_6431af929.dcm"
        p.write_bytes(b"\x00" * 10)
        with pytest.raises(DicomReadError, match=r"ID_6431af929\.dcm: not a"):
            read_header(p)


def test_dicom_read_error_pickles_with_its_fields():
    import pickle

    err = pickle.loads(pickle.dumps(DicomReadError("/x/ID_1.dcm", "empty file (0 bytes)")))
    assert (err.path, err.reason, str(err)) == ("/x/ID_1.dcm", "empty file (0 bytes)", "ID_1.dcm: empty file (0 bytes)")
    assert isinstance(err, ValueError)


def test_read_slice_is_read_hu_and_read_header_from_one_parse():
    """pydicom's CT_small.dcm: the one-parse reader returns exactly what the two readers return."""
    from pydicom.data import get_testdata_file

    from brain_audit.dicom import read_header, read_hu, read_slice

    path = get_testdata_file("CT_small.dcm")
    hu, header = read_slice(path)
    np.testing.assert_array_equal(hu, read_hu(path))
    assert header == read_header(path)
