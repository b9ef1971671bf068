"""The clinical audit report as one self-contained HTML page (``index.html`` beside ``summary.md``).

The Markdown summary is converted with Python-Markdown (pipe tables included) and every figure it shows is
embedded as a ``data:`` URI, so the page can be mailed, archived or opened offline as a single file: it makes
no request of any kind (no CDN, web font, script or remote image; a Content-Security-Policy says so to the
browser too). Links to the report's other files (``slices.csv``) stay relative links.

Raw HTML inside the Markdown is shown as text, never interpreted, so the only images on the page are the
Markdown's own ``![alt](figures/x.png)``; each is read from inside the report folder only.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from brain_audit.provenance import atomic_write_text

__all__ = ["markdown_to_html", "write_html"]

#: What a figure may be, by file extension -> (MIME type, leading bytes of the format).
_IMAGE_TYPES = {
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
}

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r'([A-Za-z_:][-A-Za-z0-9_:.]*)="([^"]*)"')

_CSS = """
body { font-family: Georgia, "Times New Roman", serif; font-size: 17px; line-height: 1.55; color: #1a1a1a;
       background: #ffffff; max-width: 60em; margin: 2em auto; padding: 0 1.2em; }
h1, h2, h3, h4 { font-family: "Helvetica Neue", Arial, sans-serif; line-height: 1.25; margin-top: 1.6em; }
h1 { font-size: 1.9em; border-bottom: 2px solid #0072B2; padding-bottom: 0.2em; }
h2 { font-size: 1.45em; border-bottom: 1px solid #cccccc; padding-bottom: 0.15em; }
table { border-collapse: collapse; margin: 1em 0; font-family: "Helvetica Neue", Arial, sans-serif;
        font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #999999; padding: 0.35em 0.7em; text-align: left; vertical-align: top; }
th { background: #dcebf7; }
tbody tr:nth-child(even) { background: #f3f6f9; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
code { font-family: Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 0.9em; background: #f2f2f2;
       padding: 0.05em 0.3em; border-radius: 3px; }
pre code { display: block; padding: 0.8em; overflow-x: auto; }
.missing-figure { display: inline-block; border: 2px dashed #D55E00; color: #8a3300; padding: 0.4em 0.8em;
                  font-family: "Helvetica Neue", Arial, sans-serif; }
"""

#: The browser may load nothing: images only from data: URIs, styles only from the inline sheet.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _placeholder(reason: str, src: str) -> str:
    return f'<span class="missing-figure">[figure {reason}: {html.escape(src)}]</span>'


def _figure_path(src: str, base_dir: Path) -> Path | None:
    """The file inside ``base_dir`` that a relative ``src`` names, or None when ``src`` must not be read:
    a scheme or host, an absolute path, a '..' step, a backslash, or a link that leads out of ``base_dir``."""
    parts = urlsplit(src)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    relative = PurePosixPath(path)
    if any(part == ".." for part in relative.parts):
        return None
    candidate = base_dir / Path(*relative.parts)
    root = base_dir.resolve()
    try:
        candidate.resolve().relative_to(root)
    except ValueError:
        return None
    return candidate


def _embed(tag: str, base_dir: Path) -> str:
    """One ``<img>`` tag of the converted Markdown -> the same tag with a data URI, or a visible placeholder."""
    attributes = dict(_ATTRIBUTE.findall(tag))
    src = html.unescape(attributes.get("src", ""))
    if src.lower().startswith("data:"):
        return tag
    path = _figure_path(src, base_dir)
    if path is None:
        return _placeholder("refused (only files inside the report folder are embedded)", src)
    kind = _IMAGE_TYPES.get(path.suffix.lower())
    if kind is None:
        return _placeholder("refused (PNG or JPEG only)", src)
    if not path.is_file():
        return _placeholder("missing", src)
    data = path.read_bytes()
    mime, signatures = kind
    if not data.startswith(signatures):
        return _placeholder(f"refused (not a {mime.split('/')[1].upper()} file)", src)
    attributes["src"] = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    attributes.setdefault("alt", "")
    # the converter's attributes are escaped already; the data URI needs no escaping
    return "<img " + " ".join(f'{k}="{v}"' for k, v in attributes.items()) + " />"


def _converter() -> Any:
    """Python-Markdown with pipe tables, with raw HTML shown as text (the html_block and html handlers off)."""
    try:
        import markdown
    except ImportError as e:  # pragma: no cover - markdown is a dependency
        raise ImportError("the audit's index.html needs the `markdown` package: pip install 'markdown>=3.4'") from e

    class _EscapeHtml(markdown.extensions.Extension):
        def extendMarkdown(self, md: Any) -> None:  # Python-Markdown's name for the hook
            md.preprocessors.deregister("html_block")
            md.inlinePatterns.deregister("html")

    # toc: every heading gets an id (its slug), so the report's contents line links to its sections
    return markdown.Markdown(extensions=["tables", "toc", _EscapeHtml()], output_format="html")


def markdown_to_html(text: str, base_dir: str | Path, title: str) -> str:
    """The report's Markdown as one self-contained HTML page.

    Args:
        text: Markdown (headings, paragraphs, pipe tables, bold, code spans, lists, ``![alt](figures/x.png)``).
        base_dir: the folder the Markdown's relative image paths start from (the report folder).
        title: the page's ``<title>`` (escaped).

    Returns:
        The HTML document. Each ``<img>`` whose ``src`` is a PNG or JPEG inside ``base_dir`` carries the file
        as a base64 ``data:`` URI. A missing file becomes a visible ``[figure missing: name]``; a ``src`` with
        a scheme or host (``http:``, ``file:``), an absolute path, a ``..`` step, or a link leading outside
        ``base_dir`` becomes ``[figure refused: ...]`` and nothing is read. ``data:`` sources are kept.
    """
    base = Path(base_dir)
    body = _converter().convert(text)
    body = _IMG_TAG.sub(lambda m: _embed(m.group(0), base), body)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n'
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{_CSS}</style>\n"
        "</head>\n<body>\n"
        f"{body}\n"
        "</body>\n</html>\n"
    )


def _plain_name(name: str, what: str) -> str:
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"`{what}` must be a file name inside the report folder. Got {name!r} instead.")
    return name


def write_html(
    report_dir: str | Path,
    markdown_name: str = "summary.md",
    html_name: str = "index.html",
    title: str = "Clinical audit",
) -> Path:
    """Convert ``report_dir / markdown_name`` (UTF-8) to ``report_dir / html_name``, written atomically.

    See :func:`markdown_to_html`; figures are read from ``report_dir`` only.

    Returns:
        The path of the HTML file.

    Raises:
        FileNotFoundError: the Markdown file is missing.
        ValueError: a name is not a plain file name.
    """
    folder = Path(report_dir)
    source = folder / _plain_name(markdown_name, "markdown_name")
    target = folder / _plain_name(html_name, "html_name")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: the report's Markdown is missing; run the audit first.")
    page = markdown_to_html(source.read_text(encoding="utf-8"), folder, title)
    return atomic_write_text(target, page)
