"""What a report shows, in order: one layout that the HTML page and the PDF both draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from osmanthus.core.catalogue import ListColour
from sdk.report.content import utc_time
from sdk.report.model import EnterpriseReport, ReportListEntry
from sdk.report.signed import SignedReport

# The HTML page and the PDF are drawn from one layout: a new section of the report is one more
# Section in lay_out(), and both formats show it. A signed value is a Value named after its
# entry in _visible_fields() and marked with that name (a data-field attribute in HTML, a
# marked-content sequence in the PDF), so that a program can find it on the page; every other
# text is a Text. Verification reads nothing from the page: it renders the signed report
# again and compares the whole file.


def _points(value: int | None) -> str:
    return "not answered" if value is None else str(value)


def _facilitation_text(report: EnterpriseReport) -> str:
    shown = "; ".join(report.facilitation) or "none"
    if report.lists_missing:
        # a class may sit on a list whose department did not answer
        missing = ", ".join(d.department for d in report.lists_missing)
        shown += f"; incomplete: {missing} did not answer"
    return shown


def _sentence(text: str) -> str:
    """`text` ending in a full stop, unless it ends in one already (in either script)."""
    return text if text.endswith((".", "。", "!", "！", "?", "？")) else text + "."


def _list_name(entry: ReportListEntry) -> str:
    return " ".join(n for n in (entry.list_name, entry.list_name_zh) if n)


def _visible_fields(report: EnterpriseReport, code: str) -> dict[str, str]:
    """Every signed value the report shows in a marked element, by the name of its mark."""
    fields = {
        "report_id": report.report_id,
        "subject_id": report.subject_id,
        "grade": report.grade,
        "score": str(report.score),
        "base": str(report.base),
        "deductions": str(report.deductions),
        "bonus_total": str(report.bonus_total),
        "issued_at": utc_time(report.issued_at),
        "issuer": report.issuer,
        "verification_code": code,
    }
    for b in report.bonuses:
        fields[f"bonus.{b.name}"] = _points(b.points)
    for r in report.restrictions:
        fields[f"restriction.{r.measure}"] = "IN FORCE" if r.in_force else "not in force"
    fields["facilitation"] = _facilitation_text(report)
    for i, e in enumerate(report.list_entries):
        fields[f"list_entry.{i}.list"] = _list_name(e)
        fields[f"list_entry.{i}.colour"] = e.colour.value.upper()
        fields[f"list_entry.{i}.window"] = (
            f"{e.window_start.isoformat()} – {e.window_end.isoformat()}"
        )
    return fields


#: how a piece of text is set: a figure (aligned right), an alert (bold, red), code (monospace)
Style = Literal["plain", "number", "alert", "code"]


@dataclass(frozen=True)
class Text:
    """Text the report shows unmarked (labels, names, notes)."""

    text: str
    style: Style = "plain"


@dataclass(frozen=True)
class Value:
    """A signed value the report shows, marked with its field name."""

    field: str
    text: str
    style: Style = "plain"


@dataclass(frozen=True)
class Row:
    cells: tuple[Text | Value, ...]
    #: a row that sums up the rows above it, set in bold
    total: bool = False


@dataclass(frozen=True)
class Table:
    #: column headings; None for a two-column table of labels and values
    header: tuple[str, ...] | None
    rows: tuple[Row, ...]
    #: relative column widths on paper
    widths: tuple[int, ...]


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[Text, ...]
    #: small print: explanations rather than findings
    note: bool = False


@dataclass(frozen=True)
class Headline:
    """The grade and the score, set large at the top."""

    grade: Value
    score: Value
    out_of: str


Block = Table | Paragraph | Headline


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Layout:
    #: the document's title (the HTML <title>, the PDF's Title)
    title: str
    heading: str
    intro: tuple[Block, ...]
    sections: tuple[Section, ...]


def lay_out(signed: SignedReport) -> Layout:
    """What the report shows, in order, whatever the output format."""
    r = signed.report
    shown = _visible_fields(r, signed.verification_code)

    def value(name: str, style: Style = "plain") -> Value:
        return Value(field=name, text=shown[name], style=style)

    scale = ", ".join(f"{letter} ≥ {minimum}" for letter, minimum in r.grade_scale)
    breakdown = (
        Row((Text("Base"), value("base", "number"), Text(""))),
        Row(
            (
                Text("Deductions (dishonest records, all departments)"),
                value("deductions", "number"),
                Text(""),
            )
        ),
        *(
            Row((Text(b.label), value(f"bonus.{b.name}", "number"), Text(str(b.cap), "number")))
            for b in r.bonuses
        ),
        Row((Text("Bonuses in total"), value("bonus_total", "number"), Text("")), total=True),
    )
    restrictions = tuple(
        Row(
            (
                Text(x.name),
                Text(x.name_zh),
                value(f"restriction.{x.measure}", "alert" if x.in_force else "plain"),
            )
        )
        for x in r.restrictions
    )
    coverage = (
        *(
            Row(
                (
                    Text(d.name),
                    Text(d.department),
                    Text(f"answered (rules {d.rules_version or 'unversioned'})"),
                )
            )
            for d in r.answered
        ),
        *(
            Row((Text(d.name), Text(d.department), Text(f"missing: {d.detail}", "alert")))
            for d in r.missing
        ),
    )
    list_rows = tuple(
        Row(
            (
                value(f"list_entry.{i}.list"),
                value(
                    f"list_entry.{i}.colour", "alert" if e.colour is ListColour.BLACK else "plain"
                ),
                Text(e.department_name),
                value(f"list_entry.{i}.window"),
                Text(
                    " ".join(
                        part
                        for part in (
                            _sentence(f"Reason: {e.reason}"),
                            _sentence(f"Legal basis: {e.legal_basis}") if e.legal_basis else "",
                            f"Grants facilitation class {e.facilitation_class}."
                            if e.facilitation_class is not None
                            else "",
                            f"Entry {e.entry_id} of {e.list}.",
                        )
                        if part
                    )
                ),
            )
        )
        for i, e in enumerate(r.list_entries)
    )
    day = f"{r.query_day.isoformat()} (China Standard Time), the day of the query"
    list_blocks: list[Block] = []
    if r.list_entries:
        # the name each department published, once: usually one name for every entry
        names = "; ".join(dict.fromkeys(e.subject_name for e in r.list_entries))
        list_blocks += [
            Paragraph(
                (
                    Text(
                        f"Red and black list entries about this enterprise in public view on "
                        f"{day}. Listed as: {names}."
                    ),
                )
            ),
            Table(
                header=("List", "Colour", "Department", "In view", "Reason and legal basis"),
                rows=list_rows,
                widths=(5, 2, 3, 3, 9),
            ),
        ]
    elif r.lists_missing:
        list_blocks.append(
            Paragraph(
                (
                    Text(
                        f"None found: no department that answered lists this enterprise on a red "
                        f"or black list in public view on {day}. Not every department answered "
                        "(below), so this is not proof that it is on none."
                    ),
                )
            )
        )
    else:
        list_blocks.append(
            Paragraph(
                (
                    Text(
                        f"None: this enterprise is on no red or black list in public view on {day}."
                    ),
                )
            )
        )
    if r.lists_missing:
        list_blocks += [
            Paragraph(
                (
                    Text(
                        f"{len(r.lists_missing)} department(s) publishing lists did not answer the "
                        "list search: their entries, if any, are not shown."
                    ),
                )
            ),
            Table(
                header=("Department", "Id", "List search"),
                rows=tuple(
                    Row(
                        (
                            Text(d.name),
                            Text(d.department),
                            Text(f"did not answer: {d.detail}", "alert"),
                        )
                    )
                    for d in r.lists_missing
                ),
                widths=(4, 2, 4),
            ),
        ]
    publishers = ", ".join(r.list_departments) or "none in the issuer's catalogue"
    list_blocks.append(
        Paragraph(
            (
                Text(
                    f"Departments publishing enterprise lists: {publishers}. Lists are published "
                    "by law. A black-list entry sets its department's flag, so the restrictions "
                    "it triggers are in force above; a red-list entry may grant a facilitation "
                    "class, shown under the grade."
                ),
            ),
            note=True,
        )
    )
    coverage_note = (
        f"{len(r.missing)} department(s) did not answer: their records are not in this score."
        if r.missing
        else "Every department holding enterprise records answered."
    )
    about = (
        Row((Text("Report id"), value("report_id"))),
        Row((Text("Time of query (UTC)"), value("issued_at"))),
        Row((Text("Issued by"), value("issuer"))),
        Row(
            (
                Text("Query ids"),
                Text(f"score {r.score_query_id}; restrictions {r.restrictions_query_id}"),
            )
        ),
        Row((Text("Signing key"), Text(signed.key_id))),
        Row((Text("Verification code"), value("verification_code", "code"))),
    )
    return Layout(
        title=f"Enterprise credit report {r.subject_id} ({r.report_id})",
        heading="Enterprise credit report 企业信用报告",
        intro=(
            Table(
                header=None,
                rows=(Row((Text("Unified social credit code"), value("subject_id"))),),
                widths=(3, 7),
            ),
            Headline(grade=value("grade"), score=value("score"), out_of=f"of {r.ceiling}"),
            Paragraph(
                (
                    Text(
                        f"Grades: {scale}. Score = base - deductions + bonuses, kept within "
                        f"{r.floor}–{r.ceiling}."
                    ),
                ),
                note=True,
            ),
            Table(
                header=None,
                rows=(Row((Text("Facilitation classes (red lists)"), value("facilitation"))),),
                widths=(3, 7),
            ),
        ),
        sections=(
            Section(
                "Breakdown",
                (Table(header=("Item", "Points", "Cap"), rows=breakdown, widths=(7, 2, 1)),),
            ),
            Section(
                "Joint-punishment restrictions 联合惩戒措施",
                (
                    Table(
                        header=("Measure", "", "At the time of the query"),
                        rows=restrictions,
                        widths=(4, 3, 3),
                    ),
                ),
            ),
            Section("Public list entries in force 红黑名单", tuple(list_blocks)),
            Section(
                "Data coverage",
                (
                    Paragraph((Text(coverage_note),)),
                    Table(
                        header=("Department", "Id", "Part in the score"),
                        rows=coverage,
                        widths=(4, 2, 4),
                    ),
                    Paragraph(
                        (
                            Text(
                                "Restrictions were answered by: "
                                + ", ".join(r.restrictions_answered)
                                + "."
                            ),
                        ),
                        note=True,
                    ),
                ),
            ),
            Section(
                "About this report",
                (
                    Table(header=None, rows=about, widths=(3, 7)),
                    Paragraph(
                        (
                            Text("The issuer signed this report with its key. To check it, run "),
                            Text("osmanthus report verify FILE --key ISSUER.pub", "code"),
                            Text(
                                " on the electronic copy (HTML or PDF); the verification code "
                                "printed above must equal the one the command prints. The values "
                                "are the issuer's reading of the encrypted answer of the "
                                "departments at the time of the query."
                            ),
                        ),
                        note=True,
                    ),
                ),
            ),
        ),
    )
