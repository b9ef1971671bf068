"""IDs are data, never paths: the one rule for image and patient IDs, and keyed pseudonyms.

**The ID rule.** Every image or patient ID read from a file (a label row, a folder listing,
a cohort table) must be a plain name before it is used: the RSNA form ``ID_<hex>``
(``ID_63eb1e259``) or, for other datasets, 1 to :data:`MAX_ID_LENGTH` letters, digits,
``_``, ``-`` and ``.``, not starting with ``.`` and without ``..`` (so never ``.``, ``..``,
a path separator, an absolute path, a space or a control character). Such a name joined to
a folder is a direct child of that folder; :func:`safe_child` builds every path made from
an ID and checks that once more (defence in depth).

**Pseudonyms.** Outputs never carry the (0010,0020) Patient ID, (0020,000D) Study Instance
UID or (0020,000E) Series Instance UID of a dataset verbatim (they are identifying
attributes, DICOM PS3.15 Annex E). :func:`pseudonym` maps each to
``PID_<16 hex>`` / ``STU_<16 hex>`` / ``SER_<16 hex>``: the first 64 bits of
HMAC-SHA256 under a secret key, of the kind and the value, so the same key gives the same
pseudonym on every run and machine, and without the key a pseudonym cannot be traced back
by hashing candidate MRNs. Values already in RSNA's pseudonymous form (``ID_<hex>``; RSNA
uses it for patients, studies and series) pass through unchanged, so RSNA and phantom
outputs are the same as before pseudonymisation existed. A dataset whose own identifiers
happen to look like ``ID_<hex>`` is therefore treated as already pseudonymised.

**The key** is 32 random bytes (:mod:`secrets`) in ``<folder>/pseudonym.key``
(:data:`KEY_FILE`, mode 0600), created once by :func:`load_or_create_key`; the header index
keeps it in its own folder (the data root may be read-only, as on Kaggle). It is never
written into a table, report or run record. A new key (a new index folder) gives new
pseudonyms.

References:
    DICOM PS3.15 Annex E (attribute confidentiality profiles); RFC 2104 (HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from brain_audit.errors import BrainAuditError, CacheError

__all__ = [
    "MAX_ID_LENGTH",
    "ID_RULE",
    "SAFE_ID_PATTERN",
    "is_safe_id",
    "validate_id",
    "safe_child",
    "is_rsna_id",
    "PSEUDONYM_PREFIXES",
    "KEY_FILE",
    "load_or_create_key",
    "pseudonym",
    "is_pseudonym",
]

#: Longest ID accepted (characters); a file name of it plus any suffix stays far below 255 bytes.
MAX_ID_LENGTH: int = 128

#: The rule in words, as every refusal states it.
ID_RULE = (f"an ID of 1 to {MAX_ID_LENGTH} letters, digits, '_', '-' and '.', not starting with '.' "
           "and without '..' or a path separator")

#: The rule as a regular expression (Python ``re`` and RE2 / pyarrow read it alike); ``..`` is refused apart.
SAFE_ID_PATTERN = rf"[A-Za-z0-9_-][A-Za-z0-9_.-]{{0,{MAX_ID_LENGTH - 1}}}"
_SAFE = re.compile(SAFE_ID_PATTERN)
_RSNA = re.compile(r"ID_[0-9a-f]+")

#: Pseudonym prefix of each kind of identifier.
PSEUDONYM_PREFIXES: dict[str, str] = {"patient": "PID", "study": "STU", "series": "SER"}
_PSEUDONYM_HEX = 16
_KEYED = {k: re.compile(rf"{p}_[0-9a-f]{{{_PSEUDONYM_HEX}}}") for k, p in PSEUDONYM_PREFIXES.items()}

#: Name of the key file in the folder that owns the pseudonyms (the header index folder).
KEY_FILE = "pseudonym.key"
_KEY_BYTES = 32


def is_safe_id(value: object) -> bool:
    """Whether ``value`` is a ``str`` that follows the ID rule (module docstring)."""
    return isinstance(value, str) and _SAFE.fullmatch(value) is not None and ".." not in value


def validate_id(value: object, what: str = "image_id", source: str | None = None) -> str:
    """``value`` itself when it follows the ID rule.

    Args:
        value: the ID as read.
        what: its name in the message (``"image_id"``, ``"patient_id"``).
        source: where it was read, put first in the message (``"labels.csv: line 7"``).

    Raises:
        BrainAuditError: ``"<source>: `image_id` must be an ID of ... Got '../x' instead."``
    """
    if not is_safe_id(value):
        prefix = f"{source}: " if source else ""
        raise BrainAuditError(f"{prefix}`{what}` must be {ID_RULE}. Got {value!r} instead.")
    return value  # type: ignore[return-value]


def safe_child(folder: str | Path, name: object, suffix: str = "", what: str = "image_id") -> Path:
    """``folder / f"{name}{suffix}"``, for a ``name`` that follows the ID rule.

    The name is validated (:func:`validate_id`), then the joined path is checked to be a
    direct child of ``folder``, compared without following links: files of a dataset may
    be symbolic links placed there by its owner, what an input file must never choose is
    the folder.

    Raises:
        BrainAuditError: ``name`` is not a plain ID, or the path would leave ``folder``.
    """
    folder = Path(folder)
    child = folder / f"{validate_id(name, what)}{suffix}"
    if os.path.dirname(os.path.normpath(child)) != os.path.normpath(folder):
        raise BrainAuditError(f"`{what}` must name a file inside {folder}. Got {name!r} instead.")
    return child


def is_rsna_id(value: object) -> bool:
    """Whether ``value`` has RSNA's pseudonymous form ``ID_<lower-case hex>`` (and the ID rule's length)."""
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _RSNA.fullmatch(value) is not None


def is_pseudonym(value: object, kind: str) -> bool:
    """Whether ``value`` is a keyed pseudonym of ``kind`` (``PID_<16 hex>`` for ``"patient"``, ...)."""
    return isinstance(value, str) and _KEYED[_kind(kind)].fullmatch(value) is not None


def _kind(kind: str) -> str:
    if kind not in PSEUDONYM_PREFIXES:
        raise ValueError(f"`kind` must be one of {sorted(PSEUDONYM_PREFIXES)}. Got {kind!r} instead.")
    return kind


def pseudonym(value: str, kind: str, key: bytes) -> str:
    """The pseudonym of one identifier.

    Args:
        value: the identifier as read from the DICOM header.
        kind: ``"patient"``, ``"study"`` or ``"series"`` (sets the prefix; the same value
            gives unrelated pseudonyms as a patient and as a study).
        key: the secret key (:func:`load_or_create_key`).

    Returns:
        ``value`` unchanged when it already is an RSNA pseudonym (``ID_<hex>``), else
        ``"<PREFIX>_<16 hex>"``: the first 8 bytes of HMAC-SHA256(key, kind NUL value).
    """
    prefix = PSEUDONYM_PREFIXES[_kind(kind)]
    if is_rsna_id(value):
        return value
    digest = hmac.new(key, f"{kind}\x00{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"{prefix}_{digest[:_PSEUDONYM_HEX]}"


def load_or_create_key(folder: str | Path) -> tuple[bytes, bool]:
    """The pseudonym key of ``folder`` (``<folder>/pseudonym.key``), created if absent.

    A new key is 32 bytes of :func:`secrets.token_bytes`, written to a private temporary
    file (mode 0600) and linked into place, so a killed run never leaves a partial key and
    two runs creating it at once end with one key.

    Returns:
        ``(key, created)``: the 32 key bytes, and whether this call created them.

    Raises:
        CacheError: the key file exists but is not 32 bytes.
    """
    folder = Path(folder)
    path = folder / KEY_FILE
    created = False
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{KEY_FILE}.{secrets.token_hex(8)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(_KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                pass  # another run created it first: use theirs
            except OSError:  # a file system without hard links: a plain atomic rename
                os.replace(tmp, path)
                created = True
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise CacheError(f"{path}: `{KEY_FILE}` must hold {_KEY_BYTES} bytes. Got {len(key)} instead; "
                         "delete the index folder to start again with a new key")
    return key, created
