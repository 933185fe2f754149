"""The reasoning cache: what it returns, and that it stays bounded in size and age."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harmony_filter.fixes.reasoning_cache import ReasoningCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_recall_returns_what_was_remembered_under_every_id() -> None:
    cache = ReasoningCache()
    cache.remember(["call_a", "call_b"], "Read the file, then edit it.")
    assert cache.recall("call_a") == "Read the file, then edit it."
    assert cache.recall("call_b") == "Read the file, then edit it."
    assert cache.recall("call_c") is None


def test_a_later_answer_replaces_the_reasoning_of_the_same_id() -> None:
    cache = ReasoningCache()
    cache.remember(["call_a"], "first")
    cache.remember(["call_a"], "second")
    assert cache.recall("call_a") == "second"
    assert len(cache) == 1


def test_empty_reasoning_and_empty_ids_are_not_stored() -> None:
    cache = ReasoningCache()
    cache.remember(["call_a"], "")
    cache.remember(["", "call_b"], "why")
    assert cache.recall("call_a") is None
    assert cache.recall("") is None
    assert len(cache) == 1


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = ReasoningCache(max_entries=2)
    cache.remember(["a"], "ra")
    cache.remember(["b"], "rb")
    assert cache.recall("a") == "ra"  # a is now more recent than b
    cache.remember(["c"], "rc")
    assert cache.recall("b") is None
    assert cache.recall("a") == "ra"
    assert cache.recall("c") == "rc"
    assert len(cache) == 2


def test_one_answer_with_more_calls_than_entries_keeps_the_last_ones() -> None:
    cache = ReasoningCache(max_entries=2)
    cache.remember(["a", "b", "c"], "r")
    assert [cache.recall(i) for i in "abc"] == [None, "r", "r"]


def test_entries_expire_after_the_ttl_and_are_then_forgotten() -> None:
    clock = FakeClock()
    cache = ReasoningCache(ttl_seconds=60, clock=clock)
    cache.remember(["a"], "ra")
    clock.now += 60
    assert cache.recall("a") == "ra"  # exactly at the limit: still fresh
    clock.now += 0.5
    assert cache.recall("a") is None
    assert len(cache) == 0


def test_recall_does_not_make_an_entry_younger() -> None:
    clock = FakeClock()
    cache = ReasoningCache(ttl_seconds=60, clock=clock)
    cache.remember(["a"], "ra")
    clock.now += 50
    assert cache.recall("a") == "ra"
    clock.now += 20
    assert cache.recall("a") is None


def test_remember_sweeps_expired_entries_without_waiting_for_the_size_bound() -> None:
    clock = FakeClock()
    cache = ReasoningCache(max_entries=100, ttl_seconds=60, clock=clock)
    cache.remember(["old1", "old2"], "stale")
    clock.now += 61
    cache.remember(["new"], "fresh")
    assert len(cache) == 1
    assert cache.recall("new") == "fresh"


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReasoningCache(max_entries=0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["remember", "recall", "tick"]),
        st.lists(st.sampled_from("abcdefgh"), max_size=4),
        st.text(max_size=3),
    ),
    max_size=60,
)


@given(operations, st.integers(min_value=1, max_value=5))
def test_never_more_than_max_entries_and_never_stale_or_foreign_text(
    ops: list[tuple[str, list[str], str]], max_entries: int
) -> None:
    clock = FakeClock()
    cache = ReasoningCache(max_entries=max_entries, ttl_seconds=10, clock=clock)
    stored: dict[str, tuple[str, float]] = {}  # what was last stored under each id, and when
    for op, ids, text in ops:
        if op == "remember":
            cache.remember(ids, text)
            if text:
                stored.update({i: (text, clock.now) for i in ids})
        elif op == "tick":
            clock.now += 4
        for call_id in ids if op == "recall" else ():
            got = cache.recall(call_id)
            if got is not None:
                text, at = stored[call_id]
                assert got == text and clock.now - at <= 10
        assert len(cache) <= max_entries
