"""The report as one self-contained HTML page: figures embedded and decodable, nothing requested, nothing read
outside the report folder."""

from __future__ import annotations

import base64
import html
import re

import cv2
import numpy as np
import pytest

from brain_audit.audit.html import markdown_to_html, write_html

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)"')

SUMMARY = """# Clinical audit

The model **missed 3 bleeds**; the threshold is `0.31`. See [every slice](slices.csv).

| patients | sensitivity | specificity |
|---|---|---|
| 40 | 93.8 % | 83.2 % |
| 12 | 90.0 % | 80.0 % |

- first finding
- second finding

![ROC curve](figures/roc.png)

![A photo](figures/case.jpg "case 3f2a")
"""


def _write_images(folder):
    (folder / "figures").mkdir(parents=True)
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[5:15, 10:20] = (0, 114, 178)
    assert cv2.imwrite(str(folder / "figures" / "roc.png"), image)
    assert cv2.imwrite(str(folder / "figures" / "case.jpg"), image)
    return image


@pytest.fixture
def report_dir(tmp_path):
    folder = tmp_path / "clinical_audit_report"
    _write_images(folder)
    (folder / "summary.md").write_text(SUMMARY, encoding="utf-8")
    return folder


def _decoded(page: str) -> list[tuple[str, np.ndarray, bytes]]:
    out = []
    for mime, payload in DATA_URI.findall(page):
        data = base64.b64decode(payload, validate=True)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out.append((mime, image, data))
    return out


class TestWriteHtml:
    def test_figures_are_embedded_and_decodable(self, report_dir):
        out = write_html(report_dir)
        assert out == report_dir / "index.html"
        page = out.read_text(encoding="utf-8")
        images = _decoded(page)
        assert [m for m, _, _ in images] == ["image/png", "image/jpeg"]
        png, jpeg = images[0], images[1]
        assert png[2].startswith(PNG_SIGNATURE)
        assert png[2] == (report_dir / "figures" / "roc.png").read_bytes()
        np.testing.assert_array_equal(png[1][10, 15], (0, 114, 178))  # the blue square, lossless
        assert jpeg[1].shape == (20, 30, 3)
        assert 'alt="ROC curve"' in page and 'title="case 3f2a"' in page

    def test_nothing_is_requested(self, report_dir):
        page = write_html(report_dir).read_text(encoding="utf-8")
        assert "http://" not in page and "https://" not in page
        assert 'src="figures' not in page
        assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
        assert "default-src 'none'" in page  # the browser is told so too

    def test_markdown_is_rendered(self, report_dir):
        page = write_html(report_dir).read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>")
        assert '<meta charset="utf-8">' in page
        assert re.search(r"<h1 id=\"clinical-audit\">Clinical audit</h1>", page)  # toc gives each heading its slug
        assert page.count("<table>") == 1 and "<th>sensitivity</th>" in page and "<td>93.8 %</td>" in page
        assert "<strong>missed 3 bleeds</strong>" in page and "<code>0.31</code>" in page
        assert "<li>first finding</li>" in page
        assert '<a href="slices.csv">every slice</a>' in page  # a local file stays a relative link

    def test_custom_names_and_refusals(self, report_dir):
        (report_dir / "notes.md").write_text("# Notes\n", encoding="utf-8")
        out = write_html(report_dir, markdown_name="notes.md", html_name="notes.html", title="Notes")
        assert out.name == "notes.html" and "<title>Notes</title>" in out.read_text(encoding="utf-8")
        with pytest.raises(FileNotFoundError, match="missing.md: the report's Markdown is missing"):
            write_html(report_dir, markdown_name="missing.md")
        with pytest.raises(ValueError, match="`html_name` must be a file name inside the report folder"):
            write_html(report_dir, html_name="../index.html")


class TestMarkdownToHtml:
    def test_missing_and_escaping_images_become_placeholders(self, tmp_path):
        base = tmp_path / "report"
        _write_images(base)
        (tmp_path / "secret.png").write_bytes((base / "figures" / "roc.png").read_bytes())
        text = "![gone](figures/gone.png)\n\n![secret](../secret.png)\n\n![deep](figures/../../secret.png)\n"
        page = markdown_to_html(text, base, "t")
        assert "[figure missing: figures/gone.png]" in page
        assert "[figure refused (only files inside the report folder are embedded): ../secret.png]" in page
        assert "figures/../../secret.png]" in page
        assert "<img" not in page and "base64" not in page  # nothing was read, nothing requested

    @pytest.mark.parametrize("src", ["https://example.org/x.png", "http://example.org/x.png", "//example.org/x.png",
                                     "file:///etc/x.png", "/etc/x.png", "%2e%2e/secret.png", "figures\\roc.png"])
    def test_remote_absolute_and_encoded_sources_are_refused(self, tmp_path, src):
        _write_images(tmp_path)
        page = markdown_to_html(f"![x]({src})", tmp_path, "t")
        assert "[figure refused" in page and "<img" not in page

    def test_link_out_of_the_folder_is_refused(self, tmp_path):
        base = tmp_path / "report"
        _write_images(base)
        (tmp_path / "secret.png").write_bytes((base / "figures" / "roc.png").read_bytes())
        (base / "figures" / "link.png").symlink_to(tmp_path / "secret.png")
        page = markdown_to_html("![x](figures/link.png)", base, "t")
        assert "[figure refused" in page and "base64" not in page

    def test_only_png_and_jpeg_files(self, tmp_path):
        _write_images(tmp_path)
        (tmp_path / "figures" / "fake.png").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
        (tmp_path / "figures" / "plot.svg").write_bytes(b"<svg/>")
        page = markdown_to_html("![a](figures/fake.png)\n\n![b](figures/plot.svg)", tmp_path, "t")
        assert "[figure refused (not a PNG file): figures/fake.png]" in page
        assert "[figure refused (PNG or JPEG only): figures/plot.svg]" in page

    def test_data_uri_is_kept_and_raw_html_is_text(self, tmp_path):
        uri = "data:image/png;base64," + base64.b64encode(PNG_SIGNATURE).decode()
        page = markdown_to_html(f'![inline]({uri})\n\n<img src="https://evil.example/x.png">\n\n<script>alert(1)</script>',
                                tmp_path, "t")
        assert f'src="{uri}"' in page
        assert "<script" not in page and '<img src="https' not in page
        assert "&lt;script&gt;" in page

    def test_title_is_escaped(self, tmp_path):
        title = 'Audit <script>alert("x")</script> & co'
        page = markdown_to_html("# Report\n", tmp_path, title)
        assert f"<title>{html.escape(title)}</title>" in page
        assert "<script" not in page
