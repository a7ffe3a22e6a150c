"""The hybrid logical clock orders local events strictly, whatever the wall clock does."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from meshpos.core.clock import COUNTER_MAX, HLC, counter_of, pack, wall_of

WALL = st.integers(min_value=0, max_value=2**42)
# A wall clock that moves forwards, stands still, or jumps back (NTP step, dead RTC battery).
WALLS = st.lists(WALL, min_size=1, max_size=200)


@given(WALLS)
def test_local_stamps_strictly_increase_whatever_the_wall_clock_does(walls: list[int]) -> None:
    clock = HLC()
    stamps = [clock.now(w) for w in walls]
    assert all(a < b for a, b in pairwise(stamps))


@given(st.lists(st.integers(0, 3), min_size=1, max_size=300))
def test_stamps_increase_under_equal_and_receding_wall_values(steps: list[int]) -> None:
    clock = HLC()
    wall = 10_000
    last = -1
    for step in steps:
        wall -= step  # never moves forward
        stamp = clock.now(wall)
        assert stamp > last
        assert wall_of(stamp) >= wall
        last = stamp


@given(WALLS)
def test_stamp_follows_the_wall_clock_when_it_is_ahead(walls: list[int]) -> None:
    clock = HLC()
    for w in walls:
        before = clock.last
        stamp = clock.now(w)
        if w > wall_of(before):
            assert stamp == pack(w, 0)
        else:
            assert wall_of(stamp) >= wall_of(before)


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 2**58), WALL),
        min_size=1,
        max_size=100,
    )
)
def test_observing_a_remote_stamp_puts_the_next_local_stamp_after_it(
    events: list[tuple[bool, int, int]],
) -> None:
    clock = HLC()
    seen = 0
    for is_remote, remote, wall in events:
        if is_remote:
            merged = clock.observe(remote, wall)
            assert merged > remote
            seen = max(seen, remote)
        stamp = clock.now(wall)
        assert stamp > seen
        seen = stamp


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_observe_of_a_stamp_far_ahead_adopts_its_wall_time(remote_wall: int, wall: int) -> None:
    clock = HLC()
    remote = pack(remote_wall, 7)
    merged = clock.observe(remote, wall)
    if wall > remote_wall:
        assert merged == pack(wall, 0)
    else:
        assert merged == pack(remote_wall, 8)


def test_counter_overflow_rolls_into_the_next_millisecond() -> None:
    wall = 5_000
    clock = HLC(pack(wall, COUNTER_MAX - 1))
    first = clock.now(wall)
    assert (wall_of(first), counter_of(first)) == (wall, COUNTER_MAX)
    rolled = clock.now(wall)
    assert (wall_of(rolled), counter_of(rolled)) == (wall + 1, 0)
    assert rolled > first
    after = clock.now(wall + 1)
    assert (wall_of(after), counter_of(after)) == (wall + 1, 1)


def test_observe_overflow_rolls_into_the_next_millisecond() -> None:
    clock = HLC()
    merged = clock.observe(pack(9_000, COUNTER_MAX), 100)
    assert merged == pack(9_001, 0)


@settings(max_examples=50)
@given(st.integers(0, 2**40), st.integers(1, 3 * (COUNTER_MAX + 1)))
def test_a_burst_in_one_millisecond_never_repeats_a_stamp(wall: int, n: int) -> None:
    clock = HLC()
    stamps = [clock.now(wall) for _ in range(n)]
    assert len(set(stamps)) == n
    assert stamps == sorted(stamps)


@given(st.integers(0, 2**46), st.integers(0, COUNTER_MAX))
def test_pack_round_trips(wall: int, counter: int) -> None:
    ts = pack(wall, counter)
    assert (wall_of(ts), counter_of(ts)) == (wall, counter)
