"""The watch's pure rules: events for filters, snapshots, tokens and their encoding."""

from __future__ import annotations

import pytest
from sessionmonitoring.v1 import session_monitoring_pb2 as pb

from server.domain.watch import (
    Event,
    SessionChange,
    Snapshot,
    WatchFilters,
    message_event,
    session_event,
)
from server.transport import watch_tokens
from server.transport.watch_stream import resume_token_field

ANY = WatchFilters(None, None, None)
ACTIVE = WatchFilters("active", None, None)


def change(existed: bool, old: str | None, exists: bool, new: str | None) -> SessionChange:
    return SessionChange("s", existed, old, "web", exists, new, "web")


@pytest.mark.parametrize(
    ("filters", "the_change", "expected"),
    [
        (ANY, change(False, None, True, "active"), Event.ADDED),
        (ANY, change(True, "active", True, "closed"), Event.UPDATED),
        (ANY, change(True, "closed", False, "closed"), Event.REMOVED),
        (ACTIVE, change(True, "active", True, "closed"), Event.REMOVED),  # stopped matching
        (ACTIVE, change(True, "closed", True, "active"), Event.ADDED),  # started matching
        (ACTIVE, change(True, "closed", True, "expired"), None),  # never matched
        (ACTIVE, change(False, None, True, "closed"), None),
        (WatchFilters(None, "sms", None), change(True, "active", True, "active"), None),
        (WatchFilters(None, None, "other"), change(False, None, True, "active"), None),
    ],
)
def test_a_session_change_is_the_event_its_filters_make_of_it(
    filters: WatchFilters, the_change: SessionChange, expected: Event | None
) -> None:
    assert session_event(the_change, filters) is expected


def test_a_message_is_for_a_filtered_stream_when_its_session_matched_then() -> None:
    assert message_event("s", ("active", "web"), ACTIVE) is Event.MESSAGE
    assert message_event("s", ("closed", "web"), ACTIVE) is None
    assert message_event("s", None, ACTIVE) is None  # no session when it was written
    assert message_event("s", None, ANY) is Event.MESSAGE  # no state needed
    assert message_event("s", None, WatchFilters(None, None, "t")) is None


def test_a_snapshot_sees_what_committed_before_it_and_not_what_was_in_progress() -> None:
    snapshot = Snapshot.parse("100:105:101,103")
    assert [xid for xid in range(98, 108) if snapshot.sees(xid)] == [98, 99, 100, 102, 104]
    assert Snapshot.parse("7:7:") == Snapshot(7, 7, frozenset())


def test_tokens_round_trip_with_a_long_snapshot_and_stay_bound_to_their_scope() -> None:
    scope = watch_tokens.watch_scope("t", ACTIVE)
    point = watch_tokens.WatchPoint(42, 1_000, Snapshot(10, 500, frozenset(range(11, 400))))
    token = watch_tokens.encode(point, scope)
    assert watch_tokens.decode(token, scope) == point
    with pytest.raises(watch_tokens.WatchTokenError, match="another tenant"):
        watch_tokens.decode(token, watch_tokens.watch_scope("u", ACTIVE))
    with pytest.raises(watch_tokens.WatchTokenError, match="other filters"):
        watch_tokens.decode(token, watch_tokens.watch_scope("t", ANY))
    with pytest.raises(watch_tokens.WatchTokenError, match="not a watch token"):
        watch_tokens.decode(token[:-8], scope)


def test_a_snapshot_too_large_for_a_token_is_left_out_never_misread() -> None:
    scope = watch_tokens.watch_scope("t", ANY)
    huge = Snapshot(1, 10_000, frozenset(range(2, 2 + watch_tokens.MAX_IN_PROGRESS + 1)))
    decoded = watch_tokens.decode(
        watch_tokens.encode(watch_tokens.WatchPoint(1, 5, huge), scope), scope
    )
    assert decoded == watch_tokens.WatchPoint(1, 5, None)


@pytest.mark.parametrize("length", [0, 1, 127, 128, 300, 20_000])
def test_a_token_appended_as_an_encoded_field_parses_as_resume_token(length: int) -> None:
    event = pb.WatchSessionsResponse(type=pb.WATCH_EVENT_TYPE_SESSION_ADDED)
    event.session.session_id = "s"
    token = "x" * length
    parsed = pb.WatchSessionsResponse.FromString(
        event.SerializeToString() + resume_token_field(token)
    )
    assert parsed.resume_token == token
    assert parsed.session.session_id == "s"
