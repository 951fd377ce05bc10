"""The sans-IO protocol: every input gets a command or a ProtocolError, never anything else."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackerd.net import protocol
from trackerd.net.protocol import Command, ProtocolError, parse_client_message
from trackerd.vision.observation import Observation

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


WIRE = {command: {"type": command.value} for command in Command}
WIRE[Command.START_SESSION] = {"type": "start_tracking", "source": "client"}


@pytest.mark.parametrize("command", list(Command))
def test_every_command_parses(command: Command) -> None:
    assert parse_client_message(json.dumps(WIRE[command])) is command
    # Extra keys are tolerated, as a client of a later protocol version may send them.
    assert parse_client_message(json.dumps({**WIRE[command], "id": 7})) is command


def test_start_tracking_names_the_server_or_the_client_as_its_source() -> None:
    server = {"type": "start_tracking", "source": "server"}
    assert parse_client_message(json.dumps(server)) is Command.START_TRACKING
    for wrong in ("camera", 1, None, ["client"]):
        with pytest.raises(ProtocolError, match='"client" to push your own frames'):
            parse_client_message(json.dumps({"type": "start_tracking", "source": wrong}))


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary(), json_values.map(json.dumps)))
def test_any_input_is_a_command_or_a_protocol_error(data: str | bytes) -> None:
    try:
        command = parse_client_message(data)
    except ProtocolError as exc:
        assert str(exc) and len(str(exc)) < 200
    else:
        assert isinstance(command, Command)


def test_deep_nesting_is_a_protocol_error_not_a_crash() -> None:
    with pytest.raises(ProtocolError):
        parse_client_message("[" * 100_000)


def test_unknown_type_message_is_short_even_for_huge_values() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(json.dumps({"type": ["x" * 10_000]}))
    assert len(str(info.value)) < 200


@given(st.floats(0, 4_102_444_800))  # up to the year 2100
def test_timestamps_are_utc_with_milliseconds(t: float) -> None:
    stamp = protocol.timestamp(t)
    assert TIMESTAMP.match(stamp)
    assert int(stamp[20:23]) == int((t - math.floor(t)) * 1000)


def test_timestamp_known_value() -> None:
    assert protocol.timestamp(1704110400.1234) == "2024-01-01T12:00:00.123Z"


def test_eye_data_has_the_documented_keys_first() -> None:
    observation = Observation(
        t=1.0,
        face_detected=True,
        eye_count=2,
        looking_away=False,
        confidence=0.98765,
        face_count=2,
        face=(1, 2, 3, 4),
        eyes=(),
        faces=((1, 2, 3, 4), (50, 60, 7, 8)),
        attention=1.0,
    )
    message = json.loads(protocol.eye_data(observation, 1704110400.5, 42))
    assert list(message)[:6] == [
        "type",
        "timestamp",
        "face_detected",
        "eye_count",
        "looking_away",
        "confidence",
    ]
    assert message["timestamp"] == "2024-01-01T12:00:00.500Z"
    assert message["confidence"] == 0.9877 and message["frame"] == 42
    assert message["captured_at"] == 1704110400.5 and message["face_count"] == 2
    assert message["face"] == [1, 2, 3, 4] and message["faces"] == [[1, 2, 3, 4], [50, 60, 7, 8]]


def test_server_messages_are_the_documented_shapes() -> None:
    assert json.loads(protocol.connection(0)) == {
        "type": "connection",
        "message": "Eye tracking connected",
        "timestamp": "1970-01-01T00:00:00.000Z",
    }
    assert json.loads(protocol.pong(0)) == {"type": "pong", "timestamp": "1970-01-01T00:00:00.000Z"}
    assert json.loads(protocol.error("nope", 0, code="bad_message")) == {
        "type": "error",
        "message": "nope",
        "code": "bad_message",
        "timestamp": "1970-01-01T00:00:00.000Z",
    }
    status = json.loads(protocol.status(True, 3, source="demo"))
    assert list(status)[:4] == ["type", "is_tracking", "connected_clients", "timestamp"]
    assert status["source"] == "demo"
