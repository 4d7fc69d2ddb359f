"""Rate limits from policy: the annotation, and the limiter's sliding windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.ratelimit import RateLimiter
from osmanthus.core.errors import ConfigError, RateLimited
from osmanthus.core.policy import PolicyEngine, RateLimit, parse_rate
from osmanthus.core.policy_cases import make_request

POLICIES = Path(__file__).resolve().parents[2] / "policies"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_are_a_count_per_period() -> None:
    assert parse_rate("60/minute") == (60, 60.0)
    assert parse_rate("1/second") == (1, 1.0)
    assert parse_rate("600/hour") == (600, 3600.0)
    assert parse_rate("5000/day") == (5000, 86400.0)
    for bad in ("0/minute", "60 per minute", "60/fortnight", "-1/hour", "1.5/hour"):
        assert parse_rate(bad) is None, bad


def test_a_malformed_rate_limit_refuses_the_policy_with_its_line() -> None:
    source = '@id("p")\n@rate_limit("lots")\npermit (principal, action, resource);\n'
    with pytest.raises(ConfigError, match=r"x.cedar, line 1: policy .p. has @rate_limit") as e:
        PolicyEngine(source=source, origin="x.cedar")
    assert "60/minute" in str(e.value)


def test_the_library_permit_carries_its_limit() -> None:
    engine = PolicyEngine.from_file(POLICIES / "central.cedar")
    decision = engine.decide(
        make_request(
            requester="library",
            role="library",
            action="PersonQuery",
            resource=("Dataset", "person"),
            context={
                "purpose": "deposit_waiver",
                "shape": "threshold",
                "consent": "valid",
                "threshold": 110,
            },
        )
    )
    assert engine.rate_limits(decision) == (
        RateLimit("central-library-deposit-waiver", 600, 3600.0, "600/hour"),
    )


def test_a_window_admits_its_count_then_refuses_until_the_oldest_grant_ages_out() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit("rule", 3, 60.0, "3/minute")
    for _ in range(3):
        limiter.charge("bank-1", [limit])
        clock.now += 10
    with pytest.raises(RateLimited) as caught:
        limiter.charge("bank-1", [limit])
    assert "bank-1 may be granted 3/minute under rule 'rule'" in caught.value.message
    assert "retry in 30 s" in caught.value.message
    assert caught.value.retryable
    limiter.charge("bank-2", [limit])  # another requester has its own window
    clock.now += 30  # the first grant is a minute old
    limiter.charge("bank-1", [limit])


def test_a_refusal_by_one_limit_counts_against_none() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    tight = RateLimit("tight", 1, 60.0, "1/minute")
    loose = RateLimit("loose", 2, 60.0, "2/minute")
    limiter.charge("r", [tight, loose])
    with pytest.raises(RateLimited, match="'tight'"):
        limiter.charge("r", [loose, tight])
    limiter.charge("r", [loose])  # the refused request did not use loose's second grant
    with pytest.raises(RateLimited, match="'loose'"):
        limiter.charge("r", [loose])


def test_a_refund_gives_the_place_back() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit("rule", 1, 60.0, "1/minute")
    stamp = limiter.charge("r", [limit])
    # the query was refused after all (too few departments answered): it does not count
    limiter.refund("r", [limit], stamp)
    limiter.charge("r", [limit])
    with pytest.raises(RateLimited):
        limiter.charge("r", [limit])
    limiter.refund("r", [limit], None)  # nothing reserved, nothing given back


def _device_request(role: str, action: str, kind: str = "person") -> dict[str, object]:
    context: dict[str, object] = {"purpose": "self_query"}
    if action == "SubjectFile":
        context["subject_kind"] = kind
    else:
        context.update(
            shape="breakdown", consent="missing" if kind == "person" else "not_applicable"
        )
    return {
        "requester": f"{role}-1",
        "role": role,
        "action": action,
        "resource": ("Dataset", kind),
        "context": context,
    }


@pytest.mark.parametrize(
    ("role", "action", "kind", "limit"),
    [
        ("kiosk", "PersonQuery", "person", "30/minute"),
        ("kiosk", "SubjectFile", "person", "30/minute"),
        ("portal", "PersonQuery", "person", "3000/minute"),
        ("portal", "EnterpriseQuery", "enterprise", "3000/minute"),
        ("portal", "SubjectFile", "person", "3000/minute"),
        ("portal", "SubjectFile", "enterprise", "3000/minute"),
    ],
)
def test_every_subject_device_permit_carries_a_limit(
    role: str, action: str, kind: str, limit: str
) -> None:
    engine = PolicyEngine.from_file(POLICIES / "central.cedar")
    decision = engine.decide(make_request(**_device_request(role, action, kind)))  # type: ignore[arg-type]
    assert decision.allowed, decision.reason
    assert [rate.text for rate in engine.rate_limits(decision)] == [limit]


def test_a_kiosk_made_to_look_up_people_is_held_to_thirty_a_minute() -> None:
    # a kiosk serves one person at a time: the 31st score in a minute is refused, whichever
    # subject it names; another kiosk, and the online site, keep their own windows
    engine = PolicyEngine.from_file(POLICIES / "central.cedar")
    clock = Clock()
    limiter = RateLimiter(clock=clock)

    def limits(role: str, action: str) -> tuple[RateLimit, ...]:
        decision = engine.decide(make_request(**_device_request(role, action)))  # type: ignore[arg-type]
        return engine.rate_limits(decision)

    kiosk_scores, kiosk_files = limits("kiosk", "PersonQuery"), limits("kiosk", "SubjectFile")
    for _ in range(30):
        limiter.charge("kiosk-1", kiosk_scores)
        clock.now += 1
    with pytest.raises(RateLimited, match="kiosk-1 may be granted 30/minute under rule "
                       "'central-kiosk-self-query'"):  # fmt: skip
        limiter.charge("kiosk-1", kiosk_scores)
    for _ in range(30):
        limiter.charge("kiosk-1", kiosk_files)
    with pytest.raises(RateLimited, match="'central-kiosk-subject-file'"):
        limiter.charge("kiosk-1", kiosk_files)
    limiter.charge("kiosk-2", kiosk_scores)
    portal_scores = limits("portal", "PersonQuery")
    for _ in range(3000):
        limiter.charge("portal-1", portal_scores)
    with pytest.raises(RateLimited, match="'central-portal-self-query'"):
        limiter.charge("portal-1", portal_scores)
    clock.now += 60  # a minute on, the kiosk serves the next person
    limiter.charge("kiosk-1", kiosk_scores)
