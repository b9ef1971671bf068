"""Read one CT slice exactly: DICOM -> Hounsfield units, and the header without pixels.

:func:`read_hu` returns float32 (Rows, Columns) in HU; :func:`read_header` the
non-identifying header fields; :func:`encode_slice` writes a slice in the RSNA form.

Order of operations in :func:`read_hu` (each step names the DICOM rule it follows):

1. Parse the file with pydicom; reject what cannot be one CT slice (see
   :class:`~brain_audit.errors.DicomReadError`).
2. Decode the stored values: native little-endian data straight from the bytes,
   anything compressed through pydicom's pixel-data plugins: RLE (pydicom itself), JPEG 2000
   (pylibjpeg-openjpeg, the extra ``brain_audit[jpeg2000]``), JPEG baseline / lossless / JPEG-LS
   (pylibjpeg-libjpeg, GPLv3, only in the extra ``brain_audit[jpeg]``); a syntax no installed plugin decodes is a
   :class:`~brain_audit.errors.DicomReadError` naming (0002,0010).
3. Fix the RSNA 2019 12-bit wrap defect when it is present (:func:`has_rsna_wrap_defect`).
4. Apply the Modality LUT, i.e. Rescale Slope and Intercept, *before* anything else
   (DICOM PS3.3 C.11.1.1.2): ``HU = stored * slope + intercept``.
5. Map Pixel Padding Value (0028,0120) pixels, and anything below air, to
   :data:`AIR_HU`.

MONOCHROME1 needs no inversion here: the Photometric Interpretation tells a viewer
how to display values *after* the VOI LUT (PS3.3 C.7.6.3.1.2), while HU are the
output of the Modality LUT, before it. A MONOCHROME1 CT therefore gives the same
HU as its MONOCHROME2 twin.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from brain_audit.errors import DicomReadError

__all__ = [
    "AIR_HU",
    "read_hu",
    "read_header",
    "read_slice",
    "has_rsna_wrap_defect",
    "HEADER_FIELDS",
    "encode_slice",
    "DicomReadError",
]

#: HU given to padding pixels and to anything below it (outside the reconstruction
#: circle real scanners store -2000 or -3024 HU; physical air is about -1000 HU).
AIR_HU: float = -1024.0

_CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
}
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR little endian
_NATIVE_BE = "1.2.840.10008.1.2.2"  # explicit VR big endian (retired)
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_NO_PIXEL_DATA = "(7FE0,0010) Pixel Data is missing (header only)"
_DEFER_BYTES = 1024  # read_header skips values longer than this (Pixel Data) instead of reading them

#: The header fields :func:`read_header` returns, as ``key: (tag, keyword)``; it also
#: reads the presence and length of (7FE0,0010) Pixel Data (never its value) and the
#: (0002,0010) Transfer Syntax UID of the file meta. Deliberately no Patient's Name,
#: Birth Date, Sex, Age, dates, institution or any other identifying attribute. Patient
#: ID and Study / Series Instance UIDs are returned as read: the header index stores
#: only their pseudonyms (:func:`brain_audit.ids.pseudonym`; RSNA's are ``ID_<hex>``).
HEADER_FIELDS: dict[str, tuple[str, str]] = {
    "sop_class_uid": ("(0008,0016)", "SOPClassUID"),
    "sop_instance_uid": ("(0008,0018)", "SOPInstanceUID"),
    "modality": ("(0008,0060)", "Modality"),
    "patient_id": ("(0010,0020)", "PatientID"),
    "study_instance_uid": ("(0020,000D)", "StudyInstanceUID"),
    "series_instance_uid": ("(0020,000E)", "SeriesInstanceUID"),
    "image_position": ("(0020,0032)", "ImagePositionPatient"),
    "pixel_spacing": ("(0028,0030)", "PixelSpacing"),
    "samples_per_pixel": ("(0028,0002)", "SamplesPerPixel"),
    "photometric_interpretation": ("(0028,0004)", "PhotometricInterpretation"),
    "number_of_frames": ("(0028,0008)", "NumberOfFrames"),
    "rows": ("(0028,0010)", "Rows"),
    "columns": ("(0028,0011)", "Columns"),
    "bits_allocated": ("(0028,0100)", "BitsAllocated"),
    "bits_stored": ("(0028,0101)", "BitsStored"),
    "pixel_representation": ("(0028,0103)", "PixelRepresentation"),
    "window_center": ("(0028,1050)", "WindowCenter"),
    "window_width": ("(0028,1051)", "WindowWidth"),
    "rescale_intercept": ("(0028,1052)", "RescaleIntercept"),
    "rescale_slope": ("(0028,1053)", "RescaleSlope"),
}


def _parse(path: str | Path, stop_before_pixels: bool, defer_size: int | None = None) -> Any:
    """dcmread with every failure turned into a DicomReadError naming the file.

    ``defer_size``: values longer than this many bytes are skipped, not read (pydicom's
    deferred read); the header uses it to see Pixel Data's length without its bytes.
    """

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DicomReadError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if size == 0:
        raise DicomReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on oddities it repairs
            try:
                return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
            except InvalidDicomError:
                # No 'DICM' preamble: legal for old files. Accept only if it parses
                # into a dataset that has image attributes.
                ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=defer_size, force=True)
                if "Rows" not in ds and "SOPClassUID" not in ds:
                    raise DicomReadError(path, "not a DICOM file (no 'DICM' prefix, no image attributes)")
                return ds
    except DicomReadError:
        raise
    except (InvalidDicomError, BytesLengthException, EOFError, struct.error, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError, NotImplementedError, OverflowError,
            UnicodeDecodeError, MemoryError) as exc:  # BytesLengthException: an element cut mid-value
        raise DicomReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """An attribute's value, or ``default`` when absent or unparsable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # RSNA 'ID_' UIDs are invalid UI values
            value = ds.get(keyword, default)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error):
        return default
    return default if value is None or value == "" else value


def _first_float(value: Any) -> float | None:
    """First number of a DS / IS / multi-value (RSNA stores some as '[40, 40]' lists)."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)):
            return float(str(value).strip("[] ").split(",")[0].split("\\")[0])
        try:
            return float(value)
        except TypeError:
            return float(value[0])
    except (ValueError, TypeError, IndexError):
        return None


def _int_attr(path: Any, ds: Any, keyword: str, tag: str, required: bool = True, default: int | None = None) -> int | None:
    value = _get(ds, keyword)
    if value is None:
        if required:
            raise DicomReadError(path, f"{tag} {_spaced(keyword)} is missing")
        return default
    try:
        return int(value)
    except (ValueError, TypeError) as exc:
        raise DicomReadError(path, f"{tag} {_spaced(keyword)} is {value!r}; not an integer") from exc


def _spaced(keyword: str) -> str:
    """'BitsStored' -> 'Bits Stored' (the attribute name as PS3.6 spells it)."""
    out = []
    for i, ch in enumerate(keyword):
        if i and ch.isupper() and (not keyword[i - 1].isupper() or (i + 1 < len(keyword) and keyword[i + 1].islower())):
            out.append(" ")
        out.append(ch)
    return "".join(out)


def read_header(path: str | Path) -> dict[str, Any]:
    """The non-identifying header of one slice, without reading or decoding pixels.

    Args:
        path: a DICOM file.

    Returns:
        A dict with exactly the keys of :data:`HEADER_FIELDS` plus ``z`` (the third
        component of Image Position (Patient), mm) and ``problem``. UIDs and IDs are
        ``str``; counts and bit depths ``int``; ``image_position`` is a 3-tuple of float
        (mm); ``pixel_spacing`` a 2-tuple of float (row, column spacing, mm);
        ``window_center`` / ``window_width`` the first value (RSNA stores some as lists);
        absent attributes are ``None``. ``problem`` is ``None`` when the header allows one
        CT slice, else the reason :func:`read_hu` would give for refusing the file, told
        from the header alone, with the same text: not CT, colour, multi-frame, no
        Rows / Columns / Bits Allocated / Pixel Representation, Pixel Data missing, empty
        or shorter than declared (uncompressed data only), Rescale Slope / Intercept not
        a number or slope 0. What only decoding can tell (a compressed stream that does
        not decode) is left to :func:`read_hu`.

    Raises:
        DicomReadError: the file is empty, missing, not DICOM or unparsable.
    """
    return _header_of(path, _parse(path, stop_before_pixels=False, defer_size=_DEFER_BYTES))


def _header_of(path: Any, ds: Any) -> dict[str, Any]:
    """:func:`read_header`'s dict from a parsed dataset."""
    out: dict[str, Any] = {}
    for key, (_tag, kw) in HEADER_FIELDS.items():
        value = _get(ds, kw)
        if key in _INT_FIELDS:
            value = None if value is None else _safe_int(value)
        elif key in {"window_center", "window_width", "rescale_intercept", "rescale_slope"}:
            value = _first_float(value)
        elif key == "image_position":
            value = _float_tuple(value, 3)
        elif key == "pixel_spacing":
            value = _float_tuple(value, 2)
        elif value is not None:
            value = str(value)
        out[key] = value
    out["z"] = None if out["image_position"] is None else out["image_position"][2]
    out["problem"] = _header_problem(path, ds)
    return out


_INT_FIELDS = {"samples_per_pixel", "number_of_frames", "rows", "columns", "bits_allocated", "bits_stored",
               "pixel_representation"}


def _header_problem(path: Any, ds: Any) -> str | None:
    """Why the header of ``ds`` cannot give one CT slice (read_hu's reason), or ``None``."""
    try:
        _check_ct_slice(path, ds)
        rows, cols, bits_alloc, _, _ = _pixel_format(path, ds)
        elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
        if elem is None:
            return _NO_PIXEL_DATA
        ts = _transfer_syntax(ds)
        length = getattr(elem, "length", None)
        undefined = length == _UNDEFINED_LENGTH or bool(getattr(elem, "is_undefined_length", False))
        if elem.value is not None:  # short enough to have been read
            n_bytes = len(elem.value)
        elif ts in _NATIVE_LE or ts in (_NATIVE_BE, ""):  # deferred: what the file holds after the value's start
            n_bytes = max(0, min(int(length), os.path.getsize(path) - int(elem.value_tell)))
        else:  # deferred inside a deflated stream: offsets are not file offsets
            n_bytes = int(length)
        why = _pixel_data_problem(rows, cols, bits_alloc, n_bytes, _is_compressed(ts, undefined))
        if why is not None:
            return why
        _rescale(path, ds)
    except DicomReadError as exc:
        return exc.reason
    except (OSError, TypeError, ValueError) as exc:
        return f"(7FE0,0010) Pixel Data is unreadable ({exc})"
    return None


def _safe_int(value: Any) -> int | None:
    try:
        return int(value)
    except (ValueError, TypeError):
        return None


def _float_tuple(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        seq = [float(v) for v in value]
    except (ValueError, TypeError):
        return None
    return tuple(seq) if len(seq) == n else None


def has_rsna_wrap_defect(bits_stored: int | None, pixel_representation: int | None, intercept: float | None) -> bool:
    """Whether a slice carries the RSNA 2019 12-bit wrap defect.

    About 5,000 RSNA slices declare (0028,0101) Bits Stored = 12, (0028,0103) Pixel
    Representation = 0 (unsigned) and a Rescale Intercept above -100, while their
    stored values are HU + 1000 whose negatives wrapped modulo 4096; read naively,
    air shows as bone. The community fix (RSNA 2019 Kaggle discussion, fastai
    ``fix_pxrepr``) is ``x = stored + 1000; x[x >= 4096] -= 4096; intercept = -1000``.
    """
    return (
        bits_stored == 12
        and pixel_representation == 0
        and intercept is not None
        and intercept > -100
    )


def _stored_values(path: Any, ds: Any) -> np.ndarray:
    """The stored pixel values of one monochrome frame, as an integer array (rows, cols)."""
    rows, cols, bits_alloc, bits_stored, pixrep = _pixel_format(path, ds)
    if "PixelData" not in ds:
        raise DicomReadError(path, _NO_PIXEL_DATA)
    ts = _transfer_syntax(ds)
    try:
        data = ds.PixelData
    except (ValueError, TypeError, EOFError, struct.error) as exc:
        raise DicomReadError(path, f"(7FE0,0010) Pixel Data is unreadable ({exc})") from exc
    compressed = _is_compressed(ts, bool(getattr(ds["PixelData"], "is_undefined_length", False)))
    why = _pixel_data_problem(rows, cols, bits_alloc, 0 if data is None else len(data), compressed)
    if why is not None:
        raise DicomReadError(path, why)
    if ts in _NATIVE_LE and bits_alloc == 16:
        # Fast path for the common case (all of RSNA): the bytes are the pixels.
        arr = np.frombuffer(data, dtype="<i2" if pixrep == 1 else "<u2", count=rows * cols).reshape(rows, cols)
        if pixrep == 1 and bits_stored < 16:
            # sign-extend from Bits Stored, as pydicom does (PS3.5 8.1.1)
            shift = 16 - bits_stored
            arr = (arr << shift) >> shift
        return arr
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, EOFError, struct.error, MemoryError) as exc:
        name = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        label = f"{name.name} ({ts})" if name is not None and hasattr(name, "name") else repr(ts)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DicomReadError(path, f"(0002,0010) Transfer Syntax UID {label}: pixels cannot be decoded ({msg})") from exc
    arr = np.asarray(arr)
    if arr.shape != (rows, cols):
        raise DicomReadError(path, f"decoded pixels have shape {arr.shape}; expected ({rows}, {cols})")
    return arr


def _pixel_format(path: Any, ds: Any) -> tuple[int, int, int, int, int]:
    """(rows, cols, bits allocated, bits stored, pixel representation), each present and usable."""
    rows = _int_attr(path, ds, "Rows", "(0028,0010)")
    cols = _int_attr(path, ds, "Columns", "(0028,0011)")
    if rows <= 0 or cols <= 0:
        raise DicomReadError(path, f"(0028,0010) Rows x (0028,0011) Columns is {rows} x {cols}; no pixels")
    bits_alloc = _int_attr(path, ds, "BitsAllocated", "(0028,0100)")
    bits_stored = _int_attr(path, ds, "BitsStored", "(0028,0101)", required=False, default=bits_alloc)
    if not bits_stored or bits_stored <= 0:
        raise DicomReadError(path, f"(0028,0101) Bits Stored is {bits_stored}; cannot decode pixels")
    pixrep = _int_attr(path, ds, "PixelRepresentation", "(0028,0103)")
    return rows, cols, bits_alloc, bits_stored, pixrep


def _transfer_syntax(ds: Any) -> str:
    return str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")


def _is_compressed(ts: str, undefined_length: bool) -> bool:
    """Encapsulated (undefined length) or a transfer syntax other than native little / big endian."""
    return undefined_length or bool(ts and ts not in _NATIVE_LE and ts != _NATIVE_BE)


def _pixel_data_problem(rows: int, cols: int, bits_alloc: int, n_bytes: int, compressed: bool) -> str | None:
    """Why ``n_bytes`` of Pixel Data cannot hold the frame (uncompressed data only), or ``None``."""
    if n_bytes == 0:
        return "(7FE0,0010) Pixel Data is empty"
    expected = rows * cols * ((bits_alloc + 7) // 8)
    if not compressed and n_bytes < expected:
        return (f"(7FE0,0010) Pixel Data has {n_bytes} bytes; (0028,0010) Rows x (0028,0011) Columns x "
                f"(0028,0100) Bits Allocated need {expected} (file truncated?)")
    return None


def _rescale(path: Any, ds: Any) -> tuple[float | None, float | None]:
    """(slope, intercept) of the Modality LUT as written, ``None`` when absent.

    Raises:
        DicomReadError: either is not a number, or the slope is 0.
    """
    slope_raw, intercept_raw = _get(ds, "RescaleSlope"), _get(ds, "RescaleIntercept")
    slope = _first_float(slope_raw)
    intercept = _first_float(intercept_raw)
    if slope_raw is not None and slope is None:
        raise DicomReadError(path, f"(0028,1053) Rescale Slope is {slope_raw!r}; not a number")
    if intercept_raw is not None and intercept is None:
        raise DicomReadError(path, f"(0028,1052) Rescale Intercept is {intercept_raw!r}; not a number")
    if slope == 0:
        raise DicomReadError(path, "(0028,1053) Rescale Slope is 0; HU cannot be recovered")
    return slope, intercept


def _check_ct_slice(path: Any, ds: Any) -> None:
    modality = _get(ds, "Modality")
    sop = str(_get(ds, "SOPClassUID", ""))
    if modality is None:
        if sop not in _CT_SOP_CLASSES:
            raise DicomReadError(path, "(0008,0060) Modality is missing and (0008,0016) SOP Class UID is not CT")
    elif str(modality).upper() != "CT":
        raise DicomReadError(path, f"(0008,0060) Modality is {str(modality)!r}; expected 'CT'")
    spp = _int_attr(path, ds, "SamplesPerPixel", "(0028,0002)", required=False, default=1)
    photometric = str(_get(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if spp != 1 or photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise DicomReadError(
            path,
            f"(0028,0004) Photometric Interpretation is {photometric!r} with (0028,0002) Samples per Pixel "
            f"{spp}; a CT slice is monochrome",
        )
    frames = _int_attr(path, ds, "NumberOfFrames", "(0028,0008)", required=False, default=1)
    if frames is not None and frames > 1:
        raise DicomReadError(path, f"(0028,0008) Number of Frames is {frames}; expected one slice per file")


def read_hu(path: str | Path, fix_rsna_defect: bool = True) -> np.ndarray:
    """Read one axial CT slice in Hounsfield units.

    Args:
        path: a DICOM file holding one monochrome CT frame, uncompressed or in any
            transfer syntax pydicom's installed plugins decode.
        fix_rsna_defect: repair the RSNA 12-bit wrap (see :func:`has_rsna_wrap_defect`).
            The repair's range is [-1000, 3095] HU, as the community fix's.

    Returns:
        float32 array (Rows, Columns) in HU: ``stored * RescaleSlope + RescaleIntercept``
        (PS3.3 C.11.1.1.2; slope 1 and intercept 0 when both are absent, with a
        RuntimeWarning), with Pixel Padding Value pixels (0028,0120) and every value
        below :data:`AIR_HU` set to :data:`AIR_HU`.

    Raises:
        DicomReadError: the file cannot give one CT slice (empty, not DICOM, truncated,
            Pixel Data shorter than declared or absent, not CT, colour, multi-frame,
            undecodable compression). The message names the file and the attribute.

    References:
        DICOM PS3.3 C.7.6.3.1 (Image Pixel), C.11.1 (Modality LUT), C.7.5.1.1.2 (Pixel
        Padding Value).
    """
    return _hu_of(path, _parse(path, stop_before_pixels=False), fix_rsna_defect)


def read_slice(path: str | Path, fix_rsna_defect: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`read_hu` and :func:`read_header` of one file from a single parse: ``(hu, header)``.

    Raises:
        DicomReadError: as :func:`read_hu`.
    """
    ds = _parse(path, stop_before_pixels=False)
    return _hu_of(path, ds, fix_rsna_defect), _header_of(path, ds)


def _hu_of(path: Any, ds: Any, fix_rsna_defect: bool) -> np.ndarray:
    """:func:`read_hu`'s array from a parsed dataset."""
    _check_ct_slice(path, ds)
    stored = _stored_values(path, ds)

    slope, intercept = _rescale(path, ds)
    if slope is None and intercept is None:
        warnings.warn(
            f"{Path(path).name}: (0028,1052) Rescale Intercept and (0028,1053) Rescale Slope are missing; "
            "assuming stored values are HU",
            RuntimeWarning,
            stacklevel=3,  # the caller of read_hu / read_slice
        )
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept

    pad_mask = _padding_mask(path, ds, stored)

    bits_stored = _safe_int(_get(ds, "BitsStored"))
    pixrep = _safe_int(_get(ds, "PixelRepresentation"))
    if fix_rsna_defect and has_rsna_wrap_defect(bits_stored, pixrep, intercept):
        x = stored.astype(np.int32) + 1000
        x[x >= 4096] -= 4096
        stored, intercept = x, -1000.0

    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    if pad_mask is not None:
        hu[pad_mask] = AIR_HU
    np.maximum(hu, AIR_HU, out=hu)
    return hu


def _padding_mask(path: Any, ds: Any, stored: np.ndarray) -> np.ndarray | None:
    """Pixels equal to Pixel Padding Value (or within its range limit), in stored units."""
    pad = _get(ds, "PixelPaddingValue")
    if pad is None:
        return None
    try:
        pad = int(pad)
        limit = _get(ds, "PixelPaddingRangeLimit")
        if limit is None:
            return stored == pad
        lo, hi = sorted((pad, int(limit)))
        return (stored >= lo) & (stored <= hi)
    except (ValueError, TypeError):
        warnings.warn(
            f"{Path(path).name}: (0028,0120) Pixel Padding Value {pad!r} is not an integer; ignored",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def encode_slice(
    hu: np.ndarray,
    *,
    sop_instance_uid: str,
    patient_id: str,
    study_instance_uid: str,
    series_instance_uid: str,
    z: float = 0.0,
    pixel_spacing: tuple[float, float] = (0.488, 0.488),
    slice_thickness: float = 5.0,
    window: tuple[float, float] = (40.0, 80.0),
    wrap_defect: bool = False,
    transfer_syntax: str | None = None,
) -> bytes:
    """Encode one HU slice as a CT DICOM file in the RSNA 2019 form, returned as bytes.

    The header carries what RSNA files carry (Modality CT, SOP Instance UID = the image
    ID, Patient ID, Study / Series Instance UIDs, Image Position / Orientation (Patient),
    Pixel Spacing, Rows / Columns, Rescale Intercept / Slope, Bits Stored, Pixel
    Representation, Window Center / Width) and nothing identifying: no names, no dates,
    no institution. The bytes are a pure function of the arguments (byte-identical reruns).

    Args:
        hu: (rows, cols) array in HU; rounded to integers.
        sop_instance_uid, patient_id, study_instance_uid, series_instance_uid: RSNA-style
            pseudonymous IDs (``"ID_<hex>"``).
        z: Image Position (Patient) z, mm (x and y put the slice centre at the origin).
        pixel_spacing: (row, column) spacing, mm.
        slice_thickness: mm.
        window: (center, width) written as Window Center / Width.
        wrap_defect: write the RSNA 12-bit wrap defect instead of a correct file: Bits
            Stored 12, Pixel Representation 0, Rescale Intercept 0 and stored values
            ``HU mod 4096`` (HU clipped to [-1000, 3095], the repair's range). A correct
            file is Bits Stored 16, Pixel Representation 1, intercept -1024, stored
            ``HU + 1024`` in int16.
        transfer_syntax: ``None`` for Explicit VR Little Endian, or a UID pydicom can
            encode (e.g. ``pydicom.uid.JPEG2000Lossless``, ``pydicom.uid.RLELossless``).

    Returns:
        The Part 10 file as ``bytes`` (write it with
        :func:`brain_audit.provenance.atomic_write_bytes`).
    """
    x = np.rint(np.asarray(hu, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"`hu` must be 2-D (rows, cols). Got shape {x.shape} instead.")
    with warnings.catch_warnings():
        # RSNA's 'ID_<hex>' UIDs are not valid UI values; pydicom warns on each.
        warnings.simplefilter("ignore", UserWarning)
        return _encode(x, sop_instance_uid, patient_id, study_instance_uid, series_instance_uid, z,
                       pixel_spacing, slice_thickness, window, wrap_defect, transfer_syntax)


def _encode(x, sop_instance_uid, patient_id, study_instance_uid, series_instance_uid, z,
            pixel_spacing, slice_thickness, window, wrap_defect, transfer_syntax) -> bytes:


    rows, cols = x.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = _CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498." + str(
        int.from_bytes(sop_instance_uid.encode()[-12:], "big")
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = _CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = ""
    ds.ImagePositionPatient = [
        round(-cols * pixel_spacing[1] / 2.0, 3),
        round(-rows * pixel_spacing[0] / 2.0, 3),
        round(float(z), 3),
    ]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = slice_thickness
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
    ds.BitsAllocated = 16
    ds.WindowCenter = float(window[0])
    ds.WindowWidth = float(window[1])
    ds.RescaleSlope = 1
    if wrap_defect:
        stored = np.mod(np.clip(x, -1000, 3095), 4096).astype("<u2")
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = 0
    else:
        stored = np.clip(x + 1024.0, -32768, 32767).astype("<i2")
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.RescaleIntercept = -1024
    ds.PixelData = stored.tobytes()
    if transfer_syntax is not None and transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
