"""`osmanthus disputes` without a node: overdue cases marked in words, the decision's flags
checked before anything is sent, and the SDK's case-key and case-id checks."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from osmanthus import cli
from osmanthus.cli.disputes import OVERDUE_MARK, _print_table, _width
from osmanthus.core.cases import Case, CaseGround, CaseKind, CaseStatus, CaseTarget
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.types import DepartmentId, SubjectKind
from sdk.caseoffice import check_case_id
from sdk.cases import case_key_bytes

CASE_ID = "case-" + "Ab3_-" * 4 + "xy"
#: no node listens here: a command that got as far as connecting would exit 5, not 3
NOWHERE = ["--node", "127.0.0.1:1", "--department", "housing"]


def _case(*, case_id: str, overdue: bool) -> Case:
    return Case(
        case_id=case_id,
        department=DepartmentId("housing"),
        kind=CaseKind.OBJECTION,
        ground=CaseGround.RECORD,
        target=CaseTarget.RECORD,
        target_id="rec-1",
        subject_kind=SubjectKind.PERSON,
        subject_id="320508198810061289",
        statement="wrong",
        commitment_letter="",
        letter_sha256="",
        filed_at=datetime.datetime(2026, 3, 2, 1, 30, tzinfo=datetime.UTC),
        decide_by=datetime.date(2026, 3, 5),
        reply_by=datetime.date(2026, 3, 16),
        overdue=overdue,
        status=CaseStatus.OPEN,
    )


def test_an_overdue_case_is_marked_in_words_not_colour_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_table(
        [_case(case_id=CASE_ID, overdue=True), _case(case_id=CASE_ID[:-1] + "z", overdue=False)]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "CASE",
        "FILED",
        "(CST)",
        "KIND",
        "ABOUT",
        "SUBJECT",
        "STATUS",
        "DECIDE",
        "BY",
    ]
    assert OVERDUE_MARK in lines[1] and "2026-03-02 09:30" in lines[1]
    assert OVERDUE_MARK not in lines[2]
    # the columns line up although the mark holds wide characters
    column = _width(lines[0][: lines[0].index("DECIDE BY")])
    for line in lines[1:]:
        assert _width(line[: line.index("2026-03-05")]) == column


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--uphold"], "needs a remedy"),
        (["--reject", "--withdraw"], "a rejection changes nothing"),
        (["--uphold", "--withdraw", "--quantity", "2"], "go with --uphold --correct"),
        (["--uphold", "--correct"], "say what --correct changes"),
        (["--uphold", "--correct", "--quantity", "0"], "at least 1"),
    ],
)
def test_a_decision_the_flags_do_not_make_is_refused_before_connecting(
    flags: list[str], words: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(
        ["disputes", "decide", CASE_ID, *flags, "--reason", "x", *NOWHERE, "--certs-dir",
         str(tmp_path)]
    )  # fmt: skip
    assert code == 3
    assert words in capsys.readouterr().err


def test_a_bad_case_id_or_department_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["disputes", "decide", "case-1", "--reject", "--reason", "x", *NOWHERE,
                     "--certs-dir", str(tmp_path)]) == 3  # fmt: skip
    assert "case_id: 'case-1' is not a case id" in capsys.readouterr().err
    assert cli.main(["disputes", "list", "--node", "127.0.0.1:1", "--department", "Housing!",
                     "--certs-dir", str(tmp_path)]) == 3  # fmt: skip
    assert "department: 'Housing!' is not a department id" in capsys.readouterr().err
    with pytest.raises(InvalidArgument) as caught:
        check_case_id("case-" + "a" * 23)
    assert caught.value.field == "case_id"


def test_the_case_key_text_of_a_subject_file_part_turns_into_its_32_bytes() -> None:
    key = bytes(range(32))
    text = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    assert case_key_bytes(text) == key
    for bad in ("", text + "=", text[:-1], text.replace(text[0], "+", 1)):
        with pytest.raises(InvalidArgument) as caught:
            case_key_bytes(bad)
        assert caught.value.field == "case_key"
