"""The one-way data flow of ARCHITECTURE.md, read from the imports themselves (``ast``, nothing is imported).

DICOM -> HU -> cache -> model -> maps -> audit; training uses every stage before it; ``demo`` and ``cli``
only call. A module may import its own stage or an earlier one, never a later one; ``phantom`` is a data
source that only ``phantom/`` itself, ``demo`` and ``cli`` may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "brain_audit"

#: Stage of every module or sub-package, in data-flow order (ARCHITECTURE.md). Written by hand so that a
#: new module must be placed here before the suite passes.
STAGES: dict[str, int] = {
    "brain_audit": 0,  # the package itself: version and the exception family
    "brain_audit.errors": 0,
    "brain_audit.ids": 0,
    "brain_audit.rsna": 0,
    "brain_audit.provenance": 0,
    "brain_audit.parallel": 0,
    "brain_audit.config": 0,
    "brain_audit.run_layout": 0,
    "brain_audit.run_lock": 0,
    "brain_audit.dicom": 1,
    "brain_audit.windowing": 1,
    "brain_audit.skull": 1,
    "brain_audit.figures": 1,
    "brain_audit.dataset": 2,
    "brain_audit.model": 3,
    "brain_audit.model.competition": 3,  # the RSNA 2019 competition metric (weighted multi-label log loss)
    "brain_audit.gradcam": 4,
    "brain_audit.audit": 5,
    "brain_audit.audit.attention_evidence": 5,  # reads gradcam's profile tables
    "brain_audit.audit.bone_study": 5,
    "brain_audit.audit.attention_audit": 5,
    "brain_audit.gradcam.coverage": 4,
    "brain_audit.train": 6,
    "brain_audit.inference": 6,  # a finished run's model applied to a folder of DICOM files; the submission
    "brain_audit.phantom": 2,  # a data source: may use the slice and dataset stages, nothing after them
    "brain_audit.demo": 7,
    "brain_audit.preflight": 7,  # the preflight check: reads every stage's plan, runs none
    "brain_audit.shortcut_study": 7,  # the demo's shortcut study: phantom counterfactuals, audit statistics
    "brain_audit.cli": 7,
    "brain_audit.__main__": 7,
}
MAY_IMPORT_PHANTOM = ("brain_audit.phantom", "brain_audit.demo", "brain_audit.shortcut_study", "brain_audit.cli")


def _module_name(path: Path) -> str:
    parts = ["brain_audit", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage_key(module: str) -> str:
    """The longest key of STAGES that is ``module`` or one of its parents."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in STAGES:
            return key
    raise KeyError(module)


def _imports(source: str, me: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every brain_audit import in ``source`` of module ``me``, function-level ones
    included; ``from brain_audit import dicom`` counts as the module ``brain_audit.dicom``."""
    package = me if is_package else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "brain_audit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                module = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "brain_audit":
                continue
            for a in node.names:
                sub = PACKAGE.parent / f"{module}.{a.name}".replace(".", "/")
                named_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                out.append((node.lineno, f"{module}.{a.name}" if named_module else module))
    return out


def _file_imports(path: Path) -> list[tuple[int, str]]:
    return _imports(path.read_text(), _module_name(path), path.name == "__init__.py")


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_stage():
    missing = [_module_name(f) for f in FILES if not any(
        _module_name(f) == k or _module_name(f).startswith(k + ".") for k in STAGES)]
    assert missing == [], f"place these modules in STAGES (and ARCHITECTURE.md): {missing}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    me = _module_name(path)
    mine = STAGES[_stage_key(me)]
    later = [(line, m) for line, m in _file_imports(path) if STAGES[_stage_key(m)] > mine]
    assert later == [], f"{me} (stage {mine}) imports a later stage: {later}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_phantom_is_imported_only_by_the_phantom_the_demo_and_the_cli(path):
    me = _module_name(path)
    if me.startswith(MAY_IMPORT_PHANTOM):
        return
    assert [(line, m) for line, m in _file_imports(path) if m.startswith("brain_audit.phantom")] == []


def test_the_rule_catches_a_violation():
    """The checker itself, on a probe placed at dataset/labels.py: importing the model is a later stage,
    the relative import of dicom resolves to an earlier one, and phantom is found by name."""
    source = "from brain_audit.model.network import build_model\nfrom ..dicom import read_hu\nfrom brain_audit import phantom\n"
    found = [m for _, m in _imports(source, "brain_audit.dataset.labels")]
    assert found == ["brain_audit.model.network", "brain_audit.dicom", "brain_audit.phantom"]
    stage = STAGES[_stage_key("brain_audit.dataset.labels")]
    assert [STAGES[_stage_key(m)] > stage for m in found] == [True, False, False]
