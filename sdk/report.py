"""Enterprise credit reports: built from a decrypted answer, signed by their issuer, checkable."""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.bundle import key_id_of
from osmanthus.catalogue import Catalogue
from osmanthus.errors import CryptoError, InvalidArgument, NotFound, OsmanthusError
from osmanthus.ids import validate_uscc
from osmanthus.strictjson import unique_keys
from osmanthus.types import Shape, SubjectKind
from sdk.results import EnterpriseScore, RestrictionResult

#: the `format` of the signed content; a verifier refuses any other
REPORT_FORMAT: Final = "osmanthus-enterprise-report/1"
#: the `format` of the envelope embedded in the HTML page
ENVELOPE_FORMAT: Final = "osmanthus-signed-report/1"
#: the id of the <script> element carrying the envelope
EMBED_ID: Final = "osmanthus-report"
#: "rpt_" and 22 base64url characters (128 random bits)
REPORT_ID_PATTERN: Final = re.compile(r"rpt_[A-Za-z0-9_-]{22}")
#: the verification code: 80 bits of SHA-256 of the content, base32 in four groups of four
CODE_PATTERN: Final = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}")
MAX_ISSUER_CHARS: Final = 200
#: a report page is about 10 kB; anything far larger is refused before parsing
MAX_REPORT_CHARS: Final = 1 << 20
_CODE_BYTES: Final = 10


class ReportError(OsmanthusError):
    """A report was refused; the subclass says whether it is malformed or not genuine."""


class MalformedReport(ReportError, InvalidArgument):
    """The file is not an Osmanthus report (no embedded content, wrong format, bad fields)."""


class TamperedReport(ReportError, CryptoError):
    """The report is not what its issuer signed: the signature, the key, the verification code
    or a value shown on the page does not match the signed content. `field` says which."""

    # a refusal, like a consent receipt with a bad signature: the input is well-formed
    exit_code = 4


@dataclass(frozen=True)
class ReportBonus:
    """One bonus category of the breakdown; `points` is None when its owner did not answer."""

    name: str
    label: str
    cap: int
    points: int | None


@dataclass(frozen=True)
class ReportRestriction:
    """One joint-punishment measure and whether it was in force at the time of the query."""

    measure: str
    name: str
    name_zh: str
    in_force: bool


@dataclass(frozen=True)
class ReportDepartment:
    """A department's part in the score: answered (under which rules) or why it was missing."""

    department: str
    name: str
    detail: str
    rules_version: str


@dataclass(frozen=True)
class EnterpriseReport:
    """What a report attests: the issuer's decrypted aggregate for one enterprise at one time."""

    report_id: str
    subject_id: str
    grade: str
    score: int
    base: int
    floor: int
    ceiling: int
    #: (letter, minimum score), highest first: the scale the grade was read from
    grade_scale: tuple[tuple[str, int], ...]
    deductions: int
    bonuses: tuple[ReportBonus, ...]
    restrictions: tuple[ReportRestriction, ...]
    answered: tuple[ReportDepartment, ...]
    missing: tuple[ReportDepartment, ...]
    #: the departments that answered the restrictions query (those able to set a trigger)
    restrictions_answered: tuple[str, ...]
    score_query_id: str
    restrictions_query_id: str
    #: when the issuer asked (UTC, whole seconds)
    issued_at: datetime
    issuer: str

    @property
    def in_force(self) -> tuple[ReportRestriction, ...]:
        return tuple(r for r in self.restrictions if r.in_force)

    @property
    def bonus_total(self) -> int:
        return sum(b.points for b in self.bonuses if b.points is not None)


@dataclass(frozen=True)
class SignedReport:
    """A report with its canonical content, the issuer's Ed25519 signature over it, and the
    short verification code derived from it."""

    report: EnterpriseReport
    content: bytes
    signature: bytes
    key_id: str
    verification_code: str


# --- building -------------------------------------------------------------------------------


def _department(catalogue: Catalogue, department: str, detail: str, rules: str) -> ReportDepartment:
    try:
        name = catalogue.department(department).name
    except (NotFound, InvalidArgument):
        # the coordinator named a department this catalogue lacks: show its id, hide nothing
        name = department
    return ReportDepartment(department=department, name=name, detail=detail, rules_version=rules)


def _check_issuer(issuer: str, *, error: type[OsmanthusError] = InvalidArgument) -> str:
    if (
        not 0 < len(issuer) <= MAX_ISSUER_CHARS
        or not issuer.isprintable()
        or issuer != issuer.strip()
    ):
        raise error(
            f"{issuer[:40]!r} is not an issuer name: 1-{MAX_ISSUER_CHARS} printable characters "
            "without leading or trailing spaces",
            field="issuer",
        )
    return issuer


def build_enterprise_report(
    *,
    score: EnterpriseScore,
    restrictions: RestrictionResult,
    catalogue: Catalogue,
    issuer: str,
    issued_at: datetime,
) -> EnterpriseReport:
    """The report of one BREAKDOWN score and the restrictions answer for the same enterprise.

    Every measure of the catalogue must have been asked, so that a report never reads "no
    restriction" for a measure nobody asked about.
    """
    subject = validate_uscc(score.subject_id, field="subject_id")
    if restrictions.subject_id != subject:
        raise InvalidArgument(
            f"the restrictions are for {restrictions.subject_id[:40]!r}, the score for {subject!r}",
            field="restrictions",
        )
    if score.shape is not Shape.BREAKDOWN or score.deductions is None or score.grade is None:
        raise InvalidArgument(
            f"a report needs a graded BREAKDOWN score, not {score.shape.value}", field="score"
        )
    if issued_at.tzinfo is None:
        raise InvalidArgument("the time of the query must carry a time zone", field="issued_at")
    model = catalogue.model(SubjectKind.ENTERPRISE)
    if score.base != model.base:
        raise InvalidArgument(
            f"the score's base {score.base} is not the catalogue's {model.base}", field="base"
        )
    asked = set(restrictions.restricted)
    known = [m.id for m in catalogue.measures]
    if asked != set(known):
        missing = sorted(set(known) - asked) or sorted(asked - set(known))
        raise InvalidArgument(
            "a report states every measure of the catalogue; "
            + ("not asked: " if set(known) - asked else "not in the catalogue: ")
            + ", ".join(missing),
            field="restrictions",
        )
    bonuses = []
    for category in model.categories:
        if category.name not in score.bonuses:
            raise InvalidArgument(
                f"the score has no value for category {category.name}", field="bonuses"
            )
        bonuses.append(
            ReportBonus(
                name=category.name,
                label=category.label,
                cap=category.cap,
                points=score.bonuses[category.name],
            )
        )
    return EnterpriseReport(
        report_id="rpt_" + secrets.token_urlsafe(16),
        subject_id=subject,
        grade=score.grade,
        score=score.score,
        base=score.base,
        floor=model.floor,
        ceiling=model.ceiling,
        grade_scale=model.grades,
        deductions=score.deductions,
        bonuses=tuple(bonuses),
        restrictions=tuple(
            ReportRestriction(
                measure=m.id, name=m.name, name_zh=m.name_zh, in_force=restrictions.restricted[m.id]
            )
            for m in catalogue.measures
        ),
        answered=tuple(
            _department(catalogue, s.department, s.detail, s.rules_version) for s in score.answered
        ),
        missing=tuple(
            _department(catalogue, s.department, s.detail, s.rules_version) for s in score.missing
        ),
        restrictions_answered=tuple(s.department for s in restrictions.answered),
        score_query_id=score.query_id,
        restrictions_query_id=restrictions.query_id,
        issued_at=issued_at.astimezone(UTC).replace(microsecond=0),
        issuer=_check_issuer(issuer),
    )


# --- canonical content ----------------------------------------------------------------------


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_content(report: EnterpriseReport) -> dict[str, Any]:
    def department(d: ReportDepartment) -> dict[str, str]:
        return {
            "department": d.department,
            "name": d.name,
            "detail": d.detail,
            "rules_version": d.rules_version,
        }

    return {
        "format": REPORT_FORMAT,
        "report_id": report.report_id,
        "subject_id": report.subject_id,
        "grade": report.grade,
        "score": report.score,
        "base": report.base,
        "floor": report.floor,
        "ceiling": report.ceiling,
        "grade_scale": [[letter, minimum] for letter, minimum in report.grade_scale],
        "deductions": report.deductions,
        "bonuses": [
            {"name": b.name, "label": b.label, "cap": b.cap, "points": b.points}
            for b in report.bonuses
        ],
        "restrictions": [
            {"measure": r.measure, "name": r.name, "name_zh": r.name_zh, "in_force": r.in_force}
            for r in report.restrictions
        ],
        "answered": [department(d) for d in report.answered],
        "missing": [department(d) for d in report.missing],
        "restrictions_answered": list(report.restrictions_answered),
        "score_query_id": report.score_query_id,
        "restrictions_query_id": report.restrictions_query_id,
        "issued_at": _time(report.issued_at),
        "issuer": report.issuer,
    }


def canonical_content(report: EnterpriseReport) -> bytes:
    """The bytes the issuer signs: the content as JSON, keys sorted, no spaces, UTF-8."""
    return json.dumps(
        _to_content(report), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def verification_code(content: bytes) -> str:
    """The first 80 bits of SHA-256 of the content in base32, as XXXX-XXXX-XXXX-XXXX."""
    text = base64.b32encode(hashlib.sha256(content).digest()[:_CODE_BYTES]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def sign_report(report: EnterpriseReport, *, private_key: Ed25519PrivateKey) -> SignedReport:
    """Sign the report's canonical content with the issuer's Ed25519 key."""
    content = canonical_content(report)
    return SignedReport(
        report=report,
        content=content,
        signature=private_key.sign(content),
        key_id=key_id_of(private_key.public_key()),
        verification_code=verification_code(content),
    )


class _Fields:
    """Reads the content's JSON with a MalformedReport naming the first field that is wrong."""

    def __init__(self, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.raw = raw
        self.prefix = prefix

    def fail(self, key: str, problem: str) -> MalformedReport:
        return MalformedReport(problem, field=f"{self.prefix}{key}")

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.raw:
            raise self.fail(key, "missing from the signed content")
        value = self.raw[key]
        # bool is an int in Python: never accept one where a number is meant
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(key, f"{value!r} is not of the expected type")
        if not isinstance(value, kind):
            raise self.fail(key, f"{str(value)[:40]!r} is not of the expected type")
        return value

    def text(self, key: str) -> str:
        value: str = self.get(key, str)
        return value

    def integer(self, key: str) -> int:
        value: int = self.get(key, int)
        return value

    def optional_integer(self, key: str) -> int | None:
        if self.raw.get(key) is None and key in self.raw:
            return None
        return self.integer(key)

    def objects(self, key: str) -> list[_Fields]:
        items = self.get(key, list)
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "is not an object")
            out.append(_Fields(item, f"{self.prefix}{key}[{i}]."))
        return out


def _department_of(f: _Fields) -> ReportDepartment:
    return ReportDepartment(
        department=f.text("department"),
        name=f.text("name"),
        detail=f.text("detail"),
        rules_version=f.text("rules_version"),
    )


def _from_content(content: bytes) -> EnterpriseReport:
    try:
        raw = json.loads(content.decode("utf-8"), object_pairs_hook=unique_keys("key"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedReport(f"the signed content is not JSON: {exc}", field="content") from None
    if not isinstance(raw, dict):
        raise MalformedReport("the signed content is not a JSON object", field="content")
    f = _Fields(raw)
    if f.text("format") != REPORT_FORMAT:
        raise f.fail("format", f"{raw['format'][:40]!r} is not {REPORT_FORMAT!r}")
    report_id = f.text("report_id")
    if not REPORT_ID_PATTERN.fullmatch(report_id):
        raise f.fail("report_id", f"{report_id[:40]!r} is not a report id")
    try:
        subject = validate_uscc(f.text("subject_id"), field="subject_id")
    except InvalidArgument as exc:
        raise MalformedReport(exc.message, field="subject_id") from None
    try:
        issued_at = datetime.strptime(f.text("issued_at"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise f.fail("issued_at", "is not a time like 2026-11-26T09:30:00Z") from None
    scale = []
    for i, pair in enumerate(f.get("grade_scale", list)):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], int)
            and not isinstance(pair[1], bool)
        ):
            raise f.fail(f"grade_scale[{i}]", "is not a [letter, minimum] pair")
        scale.append((pair[0], pair[1]))
    restrictions_answered = f.get("restrictions_answered", list)
    if not all(isinstance(d, str) for d in restrictions_answered):
        raise f.fail("restrictions_answered", "is not a list of department ids")
    unknown = set(raw) - set(_FIELD_NAMES)
    if unknown:
        raise f.fail(sorted(unknown)[0], "is not a field of an enterprise report")
    report = EnterpriseReport(
        report_id=report_id,
        subject_id=subject,
        grade=f.text("grade"),
        score=f.integer("score"),
        base=f.integer("base"),
        floor=f.integer("floor"),
        ceiling=f.integer("ceiling"),
        grade_scale=tuple(scale),
        deductions=f.integer("deductions"),
        bonuses=tuple(
            ReportBonus(
                name=b.text("name"),
                label=b.text("label"),
                cap=b.integer("cap"),
                points=b.optional_integer("points"),
            )
            for b in f.objects("bonuses")
        ),
        restrictions=tuple(
            ReportRestriction(
                measure=r.text("measure"),
                name=r.text("name"),
                name_zh=r.text("name_zh"),
                in_force=r.get("in_force", bool),
            )
            for r in f.objects("restrictions")
        ),
        answered=tuple(_department_of(d) for d in f.objects("answered")),
        missing=tuple(_department_of(d) for d in f.objects("missing")),
        restrictions_answered=tuple(restrictions_answered),
        score_query_id=f.text("score_query_id"),
        restrictions_query_id=f.text("restrictions_query_id"),
        issued_at=issued_at,
        issuer=_check_issuer(f.text("issuer"), error=MalformedReport),
    )
    _check_consistent(report)
    return report


def _check_consistent(report: EnterpriseReport) -> None:
    """The score follows from the breakdown and the grade from the score: a signed report that
    says otherwise was made wrongly, and none of its values can be relied on."""
    unclamped = report.base - report.deductions + report.bonus_total
    score = min(max(unclamped, report.floor), report.ceiling)
    if report.score != score:
        raise MalformedReport(
            f"the signed score {report.score} does not follow from its breakdown ({score})",
            field="score",
        )
    grade = next((letter for letter, least in report.grade_scale if report.score >= least), None)
    if report.grade != grade:
        raise MalformedReport(
            f"the signed grade {report.grade!r} is not the grade of score {report.score} on "
            f"its scale ({grade!r})",
            field="grade",
        )


_FIELD_NAMES: Final = (
    "format",
    "report_id",
    "subject_id",
    "grade",
    "score",
    "base",
    "floor",
    "ceiling",
    "grade_scale",
    "deductions",
    "bonuses",
    "restrictions",
    "answered",
    "missing",
    "restrictions_answered",
    "score_query_id",
    "restrictions_query_id",
    "issued_at",
    "issuer",
)


# --- the page -------------------------------------------------------------------------------


def _points(value: int | None) -> str:
    return "not answered" if value is None else str(value)


def _visible_fields(report: EnterpriseReport, code: str) -> dict[str, str]:
    """Every value the page shows in a marked element, by the name of its mark; verification
    requires each marked element to show exactly this text."""
    fields = {
        "report_id": report.report_id,
        "subject_id": report.subject_id,
        "grade": report.grade,
        "score": str(report.score),
        "base": str(report.base),
        "deductions": str(report.deductions),
        "bonus_total": str(report.bonus_total),
        "issued_at": _time(report.issued_at),
        "issuer": report.issuer,
        "verification_code": code,
    }
    for b in report.bonuses:
        fields[f"bonus.{b.name}"] = _points(b.points)
    for r in report.restrictions:
        fields[f"restriction.{r.measure}"] = "IN FORCE" if r.in_force else "not in force"
    return fields


_STYLE = """
body { font-family: "Noto Sans", "PingFang SC", "Microsoft YaHei", sans-serif; color: #111;
       max-width: 52rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; border-bottom: 1px solid #888; margin-top: 1.6rem; }
.headline { display: flex; gap: 2rem; align-items: baseline; margin: 1rem 0; }
.grade { font-size: 4rem; font-weight: bold; }
.score { font-size: 2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.in-force { font-weight: bold; color: #a00; }
.code { font-family: monospace; font-size: 1.3rem; letter-spacing: 0.1rem; }
.meta td:first-child { color: #555; width: 14rem; }
.note { color: #555; font-size: 0.85rem; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
               table { break-inside: avoid; } }
"""


def render_html(signed: SignedReport) -> str:
    """A self-contained, printable HTML page of the report, with the signed content embedded.

    Every value is escaped. The signed content travels base64-encoded in a JSON <script> block,
    so no value, however hostile, can end the block early.
    """
    r = signed.report
    shown = _visible_fields(r, signed.verification_code)

    def v(name: str, tag: str = "span", css: str = "") -> str:
        klass = f' class="{css}"' if css else ""
        return f'<{tag}{klass} data-field="{html.escape(name)}">{html.escape(shown[name])}</{tag}>'

    e = html.escape
    bonus_rows = "\n".join(
        f"<tr><td>{e(b.label)}</td>{v(f'bonus.{b.name}', 'td', 'num')}"
        f'<td class="num">{b.cap}</td></tr>'
        for b in r.bonuses
    )
    restriction_rows = "\n".join(
        f"<tr><td>{e(x.name)}</td><td>{e(x.name_zh)}</td>"
        f"{v(f'restriction.{x.measure}', 'td', 'in-force' if x.in_force else '')}</tr>"
        for x in r.restrictions
    )
    answered_rows = "\n".join(
        f"<tr><td>{e(d.name)}</td><td>{e(d.department)}</td>"
        f"<td>answered (rules {e(d.rules_version or 'unversioned')})</td></tr>"
        for d in r.answered
    )
    missing_rows = "\n".join(
        f"<tr><td>{e(d.name)}</td><td>{e(d.department)}</td>"
        f'<td class="in-force">missing: {e(d.detail)}</td></tr>'
        for d in r.missing
    )
    scale = ", ".join(f"{e(letter)} ≥ {minimum}" for letter, minimum in r.grade_scale)
    coverage_note = (
        f"{len(r.missing)} department(s) did not answer: their records are not in this score."
        if r.missing
        else "Every department holding enterprise records answered."
    )
    envelope = json.dumps(
        {
            "format": ENVELOPE_FORMAT,
            "content": base64.b64encode(signed.content).decode("ascii"),
            "signature": base64.b64encode(signed.signature).decode("ascii"),
            "key_id": signed.key_id,
            "verification_code": signed.verification_code,
        },
        sort_keys=True,
        indent=1,
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Enterprise credit report {e(r.subject_id)} ({e(r.report_id)})</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Enterprise credit report 企业信用报告</h1>
<p>Unified social credit code {v("subject_id")}</p>
<div class="headline">
<div>Grade<br>{v("grade", "span", "grade")}</div>
<div>Score<br>{v("score", "span", "score")} <span class="note">of {r.ceiling}</span></div>
</div>
<p class="note">Grades: {scale}. Score = base − deductions + bonuses, kept within
{r.floor}–{r.ceiling}.</p>

<h2>Breakdown</h2>
<table>
<thead><tr><th>Item</th><th>Points</th><th>Cap</th></tr></thead>
<tbody>
<tr><td>Base</td>{v("base", "td", "num")}<td></td></tr>
<tr><td>Deductions (dishonest records, all departments)</td>{v("deductions", "td", "num")}
<td></td></tr>
{bonus_rows}
<tr><th>Bonuses in total</th>{v("bonus_total", "td", "num")}<td></td></tr>
</tbody>
</table>

<h2>Joint-punishment restrictions 联合惩戒措施</h2>
<table>
<thead><tr><th>Measure</th><th></th><th>At the time of the query</th></tr></thead>
<tbody>
{restriction_rows}
</tbody>
</table>

<h2>Data coverage</h2>
<p>{e(coverage_note)}</p>
<table>
<thead><tr><th>Department</th><th>Id</th><th>Part in the score</th></tr></thead>
<tbody>
{answered_rows}
{missing_rows}
</tbody>
</table>
<p class="note">Restrictions were answered by: {e(", ".join(r.restrictions_answered))}.</p>

<h2>About this report</h2>
<table class="meta">
<tr><td>Report id</td><td>{v("report_id")}</td></tr>
<tr><td>Time of query (UTC)</td><td>{v("issued_at")}</td></tr>
<tr><td>Issued by</td><td>{v("issuer")}</td></tr>
<tr><td>Query ids</td><td>score {e(r.score_query_id)}; restrictions
{e(r.restrictions_query_id)}</td></tr>
<tr><td>Signing key</td><td>{e(signed.key_id)}</td></tr>
<tr><td>Verification code</td><td>{v("verification_code", "span", "code")}</td></tr>
</table>
<p class="note">The issuer signed this report with its key. To check it, run
<code>osmanthus report verify FILE --key ISSUER.pub</code> on the electronic copy; the
verification code printed above must equal the one the command prints. The values are the
issuer's reading of the encrypted answer of the departments at the time of the query.</p>
<script type="application/json" id="{EMBED_ID}">
{envelope}
</script>
</body>
</html>
"""


# --- verifying ------------------------------------------------------------------------------


class _PageReader(HTMLParser):
    """Collects the embedded envelope and the text of every element marked with data-field."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.envelopes: list[str] = []
        self.fields: list[tuple[str, str]] = []
        # open elements: (tag, field name or None, text parts) — text goes to every open field
        self._stack: list[tuple[str, str | None, list[str]]] = []
        self._in_envelope: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("id") == EMBED_ID:
            self._in_envelope = []
            return
        if tag in _VOID_TAGS:
            return
        self._stack.append((tag, attributes.get("data-field"), []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_envelope is not None:
            self.envelopes.append("".join(self._in_envelope))
            self._in_envelope = None
            return
        # close up to the matching tag, as a browser would with unclosed elements
        for depth in range(len(self._stack) - 1, -1, -1):
            if self._stack[depth][0] == tag:
                for _tag, field, parts in self._stack[depth:]:
                    if field is not None:
                        self.fields.append((field, " ".join("".join(parts).split())))
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if self._in_envelope is not None:
            self._in_envelope.append(data)
            return
        for _tag, field, parts in self._stack:
            if field is not None:
                parts.append(data)

    def close(self) -> None:
        super().close()
        for _tag, field, parts in self._stack:
            if field is not None:
                self.fields.append((field, " ".join("".join(parts).split())))
        self._stack.clear()


_VOID_TAGS: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


def _b64(value: object, *, field: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedReport("is not base64 text", field=field)
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedReport("is not base64 text", field=field) from None


def verify_report_html(page: str, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """The report a page carries, after checking it is exactly what the key's holder signed.

    Checks, in order: the embedded envelope is there once and well-formed; it names this key;
    the signature over the content verifies; the verification code is the content's; the
    content is a well-formed report; and every value the page marks as shown (grade, score,
    report id, verification code, breakdown, restrictions, issuer, time) is the signed one.
    Raises MalformedReport (not a report) or TamperedReport (not what the issuer signed).
    """
    if len(page) > MAX_REPORT_CHARS:
        raise MalformedReport(
            f"{len(page)} characters; a report is at most {MAX_REPORT_CHARS}", field="page"
        )
    reader = _PageReader()
    reader.feed(page)
    reader.close()
    if len(reader.envelopes) != 1:
        raise MalformedReport(
            f"the page holds {len(reader.envelopes)} embedded reports "
            f'(<script id="{EMBED_ID}">); a report holds exactly one',
            field="page",
        )
    try:
        envelope = json.loads(reader.envelopes[0], object_pairs_hook=unique_keys("key"))
    except ValueError as exc:
        raise MalformedReport(f"the embedded report is not JSON: {exc}", field="envelope") from None
    if not isinstance(envelope, dict) or envelope.get("format") != ENVELOPE_FORMAT:
        raise MalformedReport(f"the embedded report is not {ENVELOPE_FORMAT!r}", field="envelope")
    content = _b64(envelope.get("content"), field="content")
    signature = _b64(envelope.get("signature"), field="signature")
    key_id, code = envelope.get("key_id"), envelope.get("verification_code")
    if not isinstance(key_id, str) or not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
        raise MalformedReport("the key id or verification code is missing", field="envelope")
    expected_key = key_id_of(public_key)
    if key_id != expected_key:
        raise TamperedReport(
            f"the report was signed with key {key_id[:16]!r}, not with the key given "
            f"({expected_key}): ask the issuer for its public key",
            field="key",
        )
    try:
        public_key.verify(signature, content)
    except InvalidSignature:
        raise TamperedReport(
            "the signature does not match the content: the embedded report was altered, "
            "or not signed by this key",
            field="signature",
        ) from None
    actual_code = verification_code(content)
    if code != actual_code:
        raise TamperedReport(
            f"the embedded verification code {code} is not the content's ({actual_code})",
            field="verification_code",
        )
    report = _from_content(content)
    expected = _visible_fields(report, actual_code)
    seen: set[str] = set()
    for name, text in reader.fields:
        if name not in expected:
            raise TamperedReport(
                f"the page shows a value marked {name[:40]!r}, which the report does not have",
                field=name[:40],
            )
        if text != expected[name]:
            raise TamperedReport(
                f"the page shows {name} {text[:60]!r}, the signed report says {expected[name]!r}",
                field=name,
            )
        seen.add(name)
    absent = [n for n in ("grade", "score", "report_id", "verification_code") if n not in seen]
    if absent:
        raise TamperedReport(
            "the page does not show the signed " + ", ".join(absent), field=absent[0]
        )
    return report
