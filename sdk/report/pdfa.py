"""What makes a report's PDF a PDF/A-3b file: its XMP metadata, sRGB output intent, attachment.

ISO 19005-3 (PDF/A-3) is ISO 19005-2 (PDF/A-2) with one difference that a report needs: a file
may embed other files (the signed envelope, JSON) as "associated files" (/AF). PDF/A-2 admits
only embedded PDF/A files, so a report that carries its signed content can conform to PDF/A-3b,
not to PDF/A-2b; everything else PDF/A-2b requires, it has:

- every font embedded (sdk.report.fonts), no encryption, no transparency, no compression that
  PDF/A forbids (nothing is compressed at all);
- an output intent (ISO 19005-2 6.2.3) with an sRGB ICC profile (icc/sRGB-v2.icc, ICC v2.1), so
  the DeviceRGB colours of the page have a meaning;
- XMP metadata (6.6) that names the conformance (pdfaid:part 3, pdfaid:conformance B) and
  repeats the document information dictionary's entries, as 6.6.2.3.1 requires;
- the attachment as an associated file (ISO 19005-3 6.8): /AF in the catalogue, AFRelationship,
  F and UF, a MIME type and a modification date.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape as xml_escape

from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFStream, PDFString

#: the sRGB display profile of the output intent (icc/README.md says how it was made)
ICC_PROFILE: Final = Path(__file__).resolve().parent / "icc" / "sRGB-v2.icc"
OUTPUT_CONDITION: Final = "sRGB IEC61966-2.1"
#: PDF/A's part and conformance level, as the XMP metadata states them
PDFA_PART: Final = 3
PDFA_CONFORMANCE: Final = "B"


def pdf_date(when: datetime) -> str:
    """A PDF date (ISO 32000-1, 7.9.4) in UTC, as the document information dictionary has it."""
    return when.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")


def _xmp_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def xmp_metadata(
    *,
    title: str,
    author: str,
    subject: str,
    keywords: str,
    creator: str,
    producer: str,
    when: datetime,
) -> bytes:
    """The XMP packet of the document: the same values as its information dictionary."""
    e = xml_escape
    date = _xmp_date(when)
    packet = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">
<pdfaid:part>{PDFA_PART}</pdfaid:part>
<pdfaid:conformance>{PDFA_CONFORMANCE}</pdfaid:conformance>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:format>application/pdf</dc:format>
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{e(title)}</rdf:li></rdf:Alt></dc:title>
<dc:creator><rdf:Seq><rdf:li>{e(author)}</rdf:li></rdf:Seq></dc:creator>
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{e(subject)}</rdf:li></rdf:Alt>\
</dc:description>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
<xmp:CreatorTool>{e(creator)}</xmp:CreatorTool>
<xmp:CreateDate>{date}</xmp:CreateDate>
<xmp:ModifyDate>{date}</xmp:ModifyDate>
<xmp:MetadataDate>{date}</xmp:MetadataDate>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
<pdf:Producer>{e(producer)}</pdf:Producer>
<pdf:Keywords>{e(keywords)}</pdf:Keywords>
<pdf:Trapped>False</pdf:Trapped>
</rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""
    return packet.encode("utf-8")


def add_pdfa_entries(
    pdf_document: Any,
    *,
    metadata: bytes,
    attachment: bytes,
    attachment_name: str,
    description: str,
    when: datetime,
) -> None:
    """Add to reportlab's document catalogue the XMP metadata, the sRGB output intent and the
    attachment, as an embedded file (/Names) and an associated file (/AF).

    `pdf_document` is reportlab's PDFDocument (a canvas's `_doc`), which its type stubs leave out.
    """
    catalog = pdf_document.Catalog
    # reportlab writes only the catalogue keys it knows: name the two PDF/A adds
    catalog.__NoDefault__ = [*catalog.__NoDefault__, "OutputIntents", "AF"]
    catalog.Metadata = PDFStream(
        PDFDictionary({"Type": PDFName("Metadata"), "Subtype": PDFName("XML")}), metadata
    )
    profile = PDFStream(PDFDictionary({"N": 3}), ICC_PROFILE.read_bytes())
    catalog.OutputIntents = PDFArray(
        [
            PDFDictionary(
                {
                    "Type": PDFName("OutputIntent"),
                    "S": PDFName("GTS_PDFA1"),
                    "OutputConditionIdentifier": PDFString(OUTPUT_CONDITION),
                    "Info": PDFString(OUTPUT_CONDITION),
                    "RegistryName": PDFString("http://www.color.org"),
                    "DestOutputProfile": pdf_document.Reference(profile, "osmanthusOutputIntent"),
                }
            )
        ]
    )
    stream = PDFStream(
        PDFDictionary(
            {
                "Type": PDFName("EmbeddedFile"),
                # reportlab escapes "#" in names, so the escaped "/" goes in verbatim
                "Subtype": "/application#2Fjson",
                "Params": PDFDictionary(
                    {"Size": len(attachment), "ModDate": PDFString(pdf_date(when))}
                ),
            }
        ),
        attachment,
    )
    spec = pdf_document.Reference(
        PDFDictionary(
            {
                "Type": PDFName("Filespec"),
                "F": PDFString(attachment_name),
                "UF": PDFString(attachment_name),
                "Desc": PDFString(description),
                # the signed data the pages show (ISO 32000-2 table 43)
                "AFRelationship": PDFName("Data"),
                "EF": PDFDictionary({"F": stream}),
            }
        ),
        "osmanthusReportFile",
    )
    files = PDFDictionary({"Names": PDFArray([PDFString(attachment_name), spec])})
    catalog.Names = PDFDictionary({"EmbeddedFiles": files})
    catalog.AF = PDFArray([spec])
