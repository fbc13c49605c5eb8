"""The token bucket of ``client.connection_rate_limit`` on a fake clock."""

from __future__ import annotations

import pytest

from centrifuge_asgi.token_bucket import TokenBucket, connection_rate_limiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_starts_full_then_refills_one_token_per_second() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 1.0, clock)
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert bucket.allow() is False  # half a token
    clock.now += 0.5
    assert bucket.allow() is True
    assert bucket.allow() is False


def test_never_holds_more_than_its_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(2, 1.0, clock)
    clock.now += 3600
    assert [bucket.allow() for _ in range(3)] == [True, True, False]


def test_a_clock_going_back_adds_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(1, 1.0, clock)
    assert bucket.allow() is True
    clock.now -= 10
    assert bucket.allow() is False
    clock.now += 1  # one second after the step back: one token
    assert bucket.allow() is True


def test_refused_attempts_take_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(1, 1.0, clock)
    assert bucket.allow() is True
    for _ in range(100):
        clock.now += 0.001
        assert bucket.allow() is False
    clock.now += 0.9
    assert bucket.allow() is True  # 100 ms + 900 ms: the refused ones cost no time


@pytest.mark.parametrize(("capacity", "refill"), [(0, 1.0), (-1, 1.0), (1, 0.0)])
def test_bad_parameters(capacity: int, refill: float) -> None:
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(capacity, refill)


def test_connection_rate_limiter_is_centrifugos_shape() -> None:
    """Go's rate.NewLimiter(rate.Every(time.Second), N): burst N, one token a second."""
    assert connection_rate_limiter(0) is None
    assert connection_rate_limiter(-5) is None
    limiter = connection_rate_limiter(50)
    assert limiter is not None and (limiter.capacity, limiter.refill) == (50, 1.0)


def test_take_and_fill_are_given_the_time_instead_of_the_clock() -> None:
    def no_clock() -> float:
        raise AssertionError("the clock is not read when the time is given")

    bucket = TokenBucket(2, 0.5, no_clock, now=10.0)
    assert [bucket.take(10.0) for _ in range(3)] == [True, True, False]
    assert bucket.fill(11.0) is False  # half a token: fill takes nothing
    assert bucket.fill(12.0) is True
    assert bucket.fill(12.0) is True  # still there: fill alone never takes
    assert [bucket.take(12.0) for _ in range(2)] == [True, False]
