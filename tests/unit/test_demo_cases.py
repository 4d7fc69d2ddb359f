"""The demo's cases scene: the PDFs it files are PDFs by content, as the node checks them."""

from __future__ import annotations

import io

import pypdf
import pytest

from osmanthus.core.cases import MEDIA_PDF, check_attachment, sniff_media_type
from osmanthus.demo.cases_scene import one_page_pdf


def test_the_scene_pdf_is_a_pdf_by_content_and_parses_strictly() -> None:
    content = one_page_pdf("Tenancy registration certificate", ["No. (demo)", "a \\ b"])
    assert sniff_media_type(content) == MEDIA_PDF
    assert check_attachment("c.pdf", MEDIA_PDF, content, index=0).content == content
    reader = pypdf.PdfReader(io.BytesIO(content), strict=True)
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert "Tenancy registration certificate" in text and "No. (demo)" in text


def test_the_scene_pdf_refuses_text_its_font_cannot_show() -> None:
    with pytest.raises(UnicodeEncodeError):
        one_page_pdf("租赁登记备案证明", [])
