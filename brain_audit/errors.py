"""The one exception family of brain_audit.

Every error the package raises on purpose derives from :class:`BrainAuditError`.
Errors about input files also derive from :class:`ValueError`, so callers that
already catch ``ValueError`` keep working (the pattern of ``sklearn``'s
``NotFittedError``).

Messages name the file first and, where a DICOM attribute is at fault, the
attribute by tag and keyword, e.g.::

    ID_0a1b.dcm: (0028,0101) Bits Stored is 0; cannot decode pixels
"""

from __future__ import annotations

__all__ = [
    "BrainAuditError",
    "DicomReadError",
    "LabelFileError",
    "CacheError",
    "ConfigError",
    "WeightsFileError",
    "WeightsFileNotFoundError",
]


class BrainAuditError(Exception):
    """Base class of every error raised on purpose by brain_audit."""


class DicomReadError(BrainAuditError, ValueError):
    """A file cannot give one CT slice in Hounsfield units.

    Attributes:
        path: the offending file as given by the caller (``str``).
        reason: the reason without the file name, for ``skipped.csv`` tables.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        name = self.path.replace("\\", "/").rsplit("/", 1)[-1]
        super().__init__(f"{name}: {reason}")

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.path, self.reason))


class LabelFileError(BrainAuditError, ValueError):
    """A label CSV (RSNA ``ID,Label`` layout) is malformed; the message names file and line."""


class CacheError(BrainAuditError, RuntimeError):
    """An HU cache is missing, half-written or was built with other parameters."""


class ConfigError(BrainAuditError, ValueError):
    """A run configuration (TOML or CLI override) or a plan argument is invalid, or the data cannot
    satisfy it (more audit patients than the data holds); the message names the key."""


class WeightsFileError(BrainAuditError, ValueError):
    """A model or weights file is not what it should be (not a ``.keras`` archive, truncated,
    not Keras' ImageNet file); the message names the file and what it is not."""


class WeightsFileNotFoundError(WeightsFileError, FileNotFoundError):
    """A model or weights file does not exist (still a ``FileNotFoundError`` for old callers)."""


class DataNotFoundError(ConfigError):
    """No dataset in the RSNA layout where the run looked for one (``data_root = "auto"``, or a
    ``data_root`` without its label file); the one-line message lists the folders searched and
    how to fix it (attach the data, or run the phantom demo)."""


__all__ += ["DataNotFoundError"]


class MetadataTableError(BrainAuditError, ValueError):
    """A table of DICOM header columns (a public RSNA metadata CSV / parquet) cannot give the header
    index: unreadable, or without the columns it needs; the message names the file and the columns."""


__all__ += ["MetadataTableError"]
