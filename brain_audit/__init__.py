"""brain_audit: intracranial-hemorrhage detection on head CT that audits its own model.

Data flows one way (see ARCHITECTURE.md)::

    DICOM -> HU (dicom) -> HU cache (dataset) -> model (windows inside) -> predictions
          -> Grad-CAM / audit -> report

Importing the package is cheap: TensorFlow is imported only by the modules that
need it (``model``, ``train``, ``gradcam``), never at package import.
"""

from __future__ import annotations

from brain_audit.errors import BrainAuditError, CacheError, ConfigError, DicomReadError, LabelFileError

__version__ = "0.1.0"

__all__ = ["__version__", "BrainAuditError", "CacheError", "ConfigError", "DicomReadError", "LabelFileError"]
