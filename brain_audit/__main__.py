"""``python -m brain_audit`` runs the command line (same as ``brain-audit``)."""

from .cli import main

raise SystemExit(main())
