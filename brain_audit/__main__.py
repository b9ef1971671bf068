"""``python -m brain_audit`` runs the command line (same as ``brain-audit``)."""

from brain_audit.cli import main

raise SystemExit(main())
