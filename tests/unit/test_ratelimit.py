"""InstancePacer with a fake clock and sleep: no real time passes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.fediverse.ratelimit import (
    BucketKind,
    InstancePacer,
    PacerPolicy,
    PacerRegistry,
    PacingModel,
    WaitTooLong,
    bucket_kind,
)

T0 = 1_800_000_000.0


class FakeTime:
    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    # GoToSocial's canonical spelling; matching must not depend on case
    return {
        "X-Ratelimit-Limit": str(limit),
        "X-Ratelimit-Remaining": str(remaining),
        "X-Ratelimit-Reset": iso(reset),
    }


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


def pacer(t: FakeTime, **policy: float) -> InstancePacer:
    return InstancePacer(clock=t.clock, sleep=t.sleep, policy=PacerPolicy(**policy))  # type: ignore[arg-type]


async def test_no_information_means_no_waiting(time_: FakeTime) -> None:
    p = pacer(time_)
    for _ in range(50):
        await p.acquire()
    assert time_.sleeps == []


async def test_plenty_remaining_means_no_waiting(time_: FakeTime) -> None:
    p = pacer(time_)
    p.observe(headers(300, 250, T0 + 200))
    for _ in range(10):
        await p.acquire()
    assert time_.sleeps == []


async def test_spreads_the_rest_of_the_window_when_running_low(time_: FakeTime) -> None:
    p = pacer(time_)
    p.observe(headers(300, 100, T0 + 200))  # below half: spread ~85 usable requests over ~201 s
    for _ in range(5):
        await p.acquire()
    assert len(time_.sleeps) >= 4
    assert all(1.5 < s < 3.5 for s in time_.sleeps[1:])


async def test_waits_for_the_window_end_at_the_reserve(time_: FakeTime) -> None:
    p = pacer(time_)
    p.observe(headers(300, 15, T0 + 100))  # reserve is 15 (5% of 300)
    await p.acquire()
    assert time_.sleeps == [pytest.approx(101.0)]  # the reset plus the whole-second margin
    # after the window, the state is unknown again until the next response
    await p.acquire()
    assert len(time_.sleeps) == 1


async def test_concurrent_acquirers_count_down_the_estimate(time_: FakeTime) -> None:
    p = pacer(time_, pace_below_fraction=0.0)  # never spread, only stop at the reserve
    p.observe(headers(100, 7, T0 + 60))  # reserve 5 → 2 requests may go now
    await p.acquire()
    await p.acquire()
    assert time_.sleeps == []
    await p.acquire()
    assert time_.sleeps == [pytest.approx(61.0)]


def test_out_of_order_responses_keep_the_lowest_count(time_: FakeTime) -> None:
    p = pacer(time_)
    p.observe(headers(300, 100, T0 + 100))
    p.observe(headers(300, 140, T0 + 100))  # an older response arriving late
    p.observe({"x-ratelimit-remaining": "120"})
    assert p.remaining == 100
    p.observe(headers(300, 299, T0 + 400))  # a new window
    assert p.remaining == 299
    assert p.delay_for_next() == 0


@pytest.mark.parametrize(
    ("hdrs", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"Retry-After": "0"}, 1.0),  # never hammer
        ({"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": iso(T0 + 42)}, 43.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),  # an HTTP date
        ({}, 30.0),
        ({"Retry-After": "soon"}, 30.0),
        ({"X-Ratelimit-Reset": "12"}, 13.0),  # seconds from now (some servers)
    ],
)
def test_rate_limited_delay(time_: FakeTime, hdrs: dict[str, str], expected: float | None) -> None:
    p = pacer(time_)
    delay = p.rate_limited(hdrs)
    if expected is None:
        target = datetime(2026, 10, 21, 7, 28, tzinfo=UTC).timestamp()
        assert delay == pytest.approx(max(1.0, target - T0))
    else:
        assert delay == pytest.approx(expected)


async def test_a_429_blocks_everyone_on_the_instance(time_: FakeTime) -> None:
    registry = PacerRegistry(clock=time_.clock, sleep=time_.sleep)
    registry.get("https://a.example").rate_limited({"Retry-After": "30"})
    await registry.get("https://a.example").acquire()
    assert time_.sleeps == [pytest.approx(30.0)]
    await registry.get("https://b.example").acquire()  # another instance is not affected
    assert len(time_.sleeps) == 1
    assert registry.get("https://a.example") is registry.get("https://a.example")


async def test_a_wait_longer_than_max_wait_is_refused_not_slept(time_: FakeTime) -> None:
    p = pacer(time_, max_wait=60.0)
    p.rate_limited({"Retry-After": "3600"})
    with pytest.raises(WaitTooLong) as info:
        await p.acquire()
    assert info.value.delay == pytest.approx(3600.0)
    assert time_.sleeps == []
    time_.now += 3600
    await p.acquire()  # the window is over: it goes at once
    assert time_.sleeps == []


@pytest.mark.parametrize(
    "hdrs",
    [
        {"X-Ratelimit-Remaining": "-5", "X-Ratelimit-Reset": "garbage", "X-Ratelimit-Limit": "x"},
        {"X-Ratelimit-Remaining": "9" * 40},
        {"X-Ratelimit-Reset": "2026-13-45T99:99:99Z", "X-Ratelimit-Remaining": "0"},
    ],
)
async def test_garbage_headers_do_not_break_it(time_: FakeTime, hdrs: dict[str, str]) -> None:
    p = pacer(time_)
    p.observe(hdrs)
    await p.acquire()
    assert time_.sleeps == []


# -- buckets: which pacer a call waits on -------------------------------------------------------------------

A = "https://a.example"


@pytest.mark.parametrize(
    ("method", "path", "params", "authenticated", "kind"),
    [
        ("POST", "/api/v1/apps", (), False, BucketKind.APP_REGISTRATION),
        ("POST", "/oauth/token", (), False, BucketKind.UNAUTHENTICATED),
        ("GET", "/api/v1/instance", (), False, BucketKind.UNAUTHENTICATED),
        ("GET", "/api/v1/accounts/verify_credentials", (), True, BucketKind.TOKEN),
        ("GET", "/api/v1/notifications", ("limit",), True, BucketKind.TOKEN),
        ("GET", "/api/v1/notifications", ("limit", "since_id"), True, BucketKind.PAGING),
        ("GET", "/api/v1/notifications", ("max_id",), True, BucketKind.PAGING),
    ],
)
def test_bucket_kind(
    method: str, path: str, params: tuple[str, ...], authenticated: bool, kind: BucketKind
) -> None:
    assert bucket_kind(method, path, params, authenticated=authenticated) is kind


def test_shared_model_puts_every_call_but_app_registration_in_one_bucket() -> None:
    registry = PacerRegistry()
    buckets = {
        registry.bucket(A, kind, token)
        for kind, token in [
            (BucketKind.UNAUTHENTICATED, None),
            (BucketKind.TOKEN, "token-one"),
            (BucketKind.TOKEN, "token-two"),
            (BucketKind.PAGING, "token-one"),
        ]
    }
    assert len(buckets) == 1
    assert registry.bucket(A, BucketKind.APP_REGISTRATION, None) not in buckets


def test_mastodon_is_paced_per_token_once_known() -> None:
    registry = PacerRegistry()
    registry.learn_from_headers(A, {"Server": "Mastodon"})
    assert registry.model(A) is PacingModel.BUCKETS
    assert registry.model("https://b.example") is PacingModel.SHARED
    seen = {
        registry.bucket(A, BucketKind.UNAUTHENTICATED, None),
        registry.bucket(A, BucketKind.TOKEN, "token-one"),
        registry.bucket(A, BucketKind.TOKEN, "token-two"),
        registry.bucket(A, BucketKind.PAGING, "token-one"),
        registry.bucket(A, BucketKind.APP_REGISTRATION, None),
    }
    assert len(seen) == 5
    assert all("token-one" not in repr(bucket) for bucket in seen)  # the token is not kept in a key


def test_software_from_the_probe_chooses_the_model() -> None:
    registry = PacerRegistry()
    registry.learn_software(A, "gotosocial")
    assert registry.model(A) is PacingModel.SHARED
    registry.learn_software(A, "mastodon")
    assert registry.model(A) is PacingModel.BUCKETS


async def test_one_tokens_tight_bucket_does_not_delay_another_token(time_: FakeTime) -> None:
    registry = PacerRegistry(clock=time_.clock, sleep=time_.sleep)
    registry.learn_model(A, PacingModel.BUCKETS)
    registry.get(registry.bucket(A, BucketKind.TOKEN, "alice")).observe(headers(300, 1, T0 + 200))
    await registry.get(registry.bucket(A, BucketKind.TOKEN, "bob")).acquire()
    await registry.get(registry.bucket(A, BucketKind.UNAUTHENTICATED, None)).acquire()
    assert time_.sleeps == []
    await registry.get(registry.bucket(A, BucketKind.TOKEN, "alice")).acquire()
    assert time_.sleeps == [pytest.approx(201.0)]


async def test_a_spent_registration_bucket_does_not_delay_the_code_exchange(time_: FakeTime) -> None:
    registry = PacerRegistry(clock=time_.clock, sleep=time_.sleep)
    apps = registry.get(registry.bucket(A, BucketKind.APP_REGISTRATION, None))
    apps.observe(headers(5, 0, T0 + 600))  # Mastodon: 5 registrations per 10 minutes, all used
    await registry.get(registry.bucket(A, BucketKind.UNAUTHENTICATED, None)).acquire()
    await registry.get(registry.bucket(A, BucketKind.TOKEN, "new-token")).acquire()
    assert time_.sleeps == []
    with pytest.raises(WaitTooLong):  # only another registration has to wait (10 minutes: refused)
        await apps.acquire()


def test_the_number_of_pacers_is_bounded() -> None:
    registry = PacerRegistry(max_pacers=50)
    for n in range(5000):
        host = f"https://rand-{n}.evil.example"
        registry.learn_from_headers(host, {"Server": "Mastodon"})
        registry.get(registry.bucket(host, BucketKind.UNAUTHENTICATED, None))
    assert len(registry) == 50
    assert registry.model("https://rand-0.evil.example") is PacingModel.SHARED  # forgotten, not kept forever


def test_the_pacer_in_use_survives_others_being_created() -> None:
    registry = PacerRegistry(max_pacers=3)
    kept = registry.get("kept")
    for n in range(10):
        registry.get(f"probe-{n}")
        assert registry.get("kept") is kept  # each use makes it the most recent
