"""Session tokens (issue 21, item 1): HS256 JWTs minted here with PyJWT, as a platform would.

:func:`trackerd.platform.tokens.verify` on its own, with the time given (every kind of failure,
the clock leeway, rotation), the ``TRACKERD_SIGNING_KEYS`` parser; then real ``python -m
trackerd --source demo`` processes: a good token is let in and names its push session, each
failure is a 401 at the upgrade with the reason and cause that ``/access`` reports and
``/metrics`` counts, grants are enforced per command, the shared token still works beside the
keys, a removed kid is refused, and a bad key list stops the server before it listens, without
printing the secret.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import jwt
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.serverkit import capped, recv_json, recv_type, run_trackerd, serving
from tests.test_ops import http_get
from trackerd.platform import tokens
from trackerd.platform.tokens import Grant, Rejected

KEY_1 = "k1-" + "a" * 40
KEY_2 = "k2-" + "b" * 40
OTHER = "not-the-key-" + "c" * 40
KEYS = {"k1": KEY_1.encode(), "k2": KEY_2.encode()}
SHARED = "shared-token-for-simple-deployments"
NOW = 1_700_000_000.0
PUSH = json.dumps({"type": "start_tracking", "source": "client"})


def claims(**changes: Any) -> dict[str, Any]:
    """A good token's claims at :data:`NOW` (or at the real time, ``now=...``), changed; a
    change to ``None`` leaves the claim out."""
    now = changes.pop("now", NOW)
    base: dict[str, Any] = {
        "sid": "interview-42",
        "sub": "candidate-7",
        "nbf": int(now) - 1,
        "exp": int(now) + 600,
        "grants": ["push"],
        "metadata": {"exam": "algebra"},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    payload: dict[str, Any], key: str = KEY_1, kid: str | None = "k1", alg: str = "HS256"
) -> str:
    headers = {"kid": kid} if kid is not None else {}
    secret = "" if alg == "none" else key  # PyJWT's "none" takes no key, spelt "" or None
    return jwt.encode(payload, secret, algorithm=alg, headers=headers)


# --- verify, pure -------------------------------------------------------------------------------


def test_a_good_token_gives_its_claims() -> None:
    grant = tokens.verify(mint(claims(grants=["push", "observe", "later"])), KEYS, NOW)
    assert isinstance(grant, Grant)
    assert (grant.sid, grant.sub, grant.expires_at) == ("interview-42", "candidate-7", NOW + 600)
    assert grant.grants == {"push", "observe"}, "an unknown grant beside known ones is ignored"
    assert dict(grant.metadata) == {"exam": "algebra"}
    assert grant.allows("push") and not grant.allows("stream")


def test_both_keys_of_a_rotation_verify_and_bytes_are_read_as_text() -> None:
    assert isinstance(tokens.verify(mint(claims()), KEYS, NOW), Grant)
    assert isinstance(tokens.verify(mint(claims(), KEY_2, "k2"), KEYS, NOW), Grant)
    assert isinstance(tokens.verify(mint(claims()).encode(), KEYS, NOW), Grant)
    assert tokens.verify(mint(claims(), KEY_2, "k1"), KEYS, NOW) == tokens.BAD_SIGNATURE


def test_the_clock_may_be_off_by_the_leeway_and_no_more() -> None:
    leeway = tokens.CLOCK_LEEWAY_S
    token = mint(claims(nbf=int(NOW), exp=int(NOW) + 60))
    assert isinstance(tokens.verify(token, KEYS, NOW + 60 + leeway - 1), Grant)
    assert tokens.verify(token, KEYS, NOW + 60 + leeway) == tokens.EXPIRED
    assert isinstance(tokens.verify(token, KEYS, NOW - leeway), Grant)
    assert tokens.verify(token, KEYS, NOW - leeway - 1) == tokens.NOT_YET_VALID


def unsigned_none(payload: dict[str, Any]) -> str:
    return mint(payload, alg="none")


FAILURES: list[tuple[str, str, str]] = [
    # (name, token, cause)
    ("expired", mint(claims(exp=int(NOW) - 60)), "token-expired"),
    ("not yet valid", mint(claims(nbf=int(NOW) + 60)), "token-not-yet-valid"),
    ("bad signature", mint(claims(), OTHER), "token-signature"),
    ("unknown kid", mint(claims(), KEY_1, "k9"), "token-kid"),
    ("no kid", mint(claims(), KEY_1, None), "token-kid"),
    ("alg none", unsigned_none(claims()), "token-alg"),
    ("alg HS512", mint(claims(), "z" * 64, alg="HS512"), "token-alg"),
    ("no sid", mint(claims(sid=None)), "token-claim"),
    ("no sub", mint(claims(sub=None)), "token-claim"),
    ("no exp", mint(claims(exp=None)), "token-claim"),
    ("no nbf", mint(claims(nbf=None)), "token-claim"),
    ("no grants", mint(claims(grants=None)), "token-claim"),
    ("exp as text", mint(claims(exp="tomorrow")), "token-claim"),
    ("sid with a space", mint(claims(sid="a b")), "token-claim"),
    ("sid too long", mint(claims(sid="x" * 129)), "token-claim"),
    ("grants not a list", mint(claims(grants="push")), "token-claim"),
    ("wrong grant", mint(claims(grants=["admin"])), "token-grant"),
    ("no grant at all", mint(claims(grants=[])), "token-grant"),
    ("metadata too big", mint(claims(metadata={"x": "y" * 2048})), "token-metadata"),
    ("metadata not an object", mint(claims(metadata=[1])), "token-claim"),
    ("not a JWT", "s3cret", "token-malformed"),
    ("three bad parts", "a.b.c", "token-malformed"),
    ("a header that is not JSON", "bm90IGpzb24.e30.c2ln", "token-malformed"),
]


@pytest.mark.parametrize(("name", "token", "cause"), FAILURES, ids=[f[0] for f in FAILURES])
def test_each_failure_has_its_cause(name: str, token: str, cause: str) -> None:
    verdict = tokens.verify(token, KEYS, NOW)
    assert isinstance(verdict, Rejected) and verdict.cause == cause, verdict


def test_a_missing_claim_is_named() -> None:
    for claim in tokens.REQUIRED_CLAIMS:
        verdict = tokens.verify(mint(claims(**{claim: None})), KEYS, NOW)
        assert verdict == Rejected("token-claim", f"token claim {claim} is missing"), claim


def test_metadata_at_the_cap_is_kept() -> None:
    filler = tokens.MAX_METADATA_BYTES - len('{"x":""}')
    grant = tokens.verify(mint(claims(metadata={"x": "y" * filler})), KEYS, NOW)
    assert isinstance(grant, Grant) and len(grant.metadata["x"]) == filler


# --- TRACKERD_SIGNING_KEYS ----------------------------------------------------------------------


def test_signing_keys_are_kid_secret_pairs() -> None:
    assert tokens.signing_keys(f" k1={KEY_1} , k2={KEY_2}==,") == {
        "k1": KEY_1.encode(),
        "k2": (KEY_2 + "==").encode(),  # a base64 secret keeps its padding
    }
    assert tokens.signing_keys("") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"k1={KEY_1},k1={KEY_2}", "kid 'k1' is given twice"),
        (f"={KEY_1}", "entry 1 is not kid=secret"),
        (f"k1={KEY_1},{KEY_2}", "entry 2 is not kid=secret"),
        ("k1=" + "s" * 31, "31 bytes; HS256 needs at least 32 (256 bits)"),
        (f"k 1={KEY_1}", "entry 1: a kid is printable"),
    ],
)
def test_bad_signing_keys_say_why_without_the_secret(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".") as raised:
        tokens.signing_keys(text)
    assert says in str(raised.value)
    for secret in (KEY_1, KEY_2, "s" * 31):
        assert secret not in str(raised.value)


@pytest.mark.parametrize(
    "keys", [f"k1={KEY_1},k1={KEY_2}", "k1=" + "s" * 20, KEY_1], ids=["twice", "short", "no kid"]
)
def test_a_bad_key_list_stops_the_server_before_it_listens(keys: str) -> None:
    done = run_trackerd("--port", "0", "--source", "demo", env={"TRACKERD_SIGNING_KEYS": keys})
    assert done.returncode == 2, done.stderr
    assert "invalid setting: signing_keys (TRACKERD_SIGNING_KEYS): " in done.stderr
    assert "listening" not in done.stderr
    for secret in (KEY_1, KEY_2, "s" * 20):
        assert secret not in done.stderr + done.stdout


# --- a real server ------------------------------------------------------------------------------


async def upgrade(port: int, token: str) -> tuple[int, str]:
    """The status an upgrade with ``?token=`` gets (101: let in) and the refusal's text."""
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/?token={token}") as ws:
            assert (await recv_json(ws))["type"] == "connection"
            return 101, ""
    except ConnectionRejected as rejected:
        return int(rejected.status_code), (rejected.body or b"").decode().strip()


async def access(port: int, token: str) -> dict[str, Any]:
    status, _, body = await trio.to_thread.run_sync(http_get, port, f"/access?token={token}")
    assert status == 200, body
    verdict: dict[str, Any] = json.loads(body)
    return verdict


async def command(port: int, token: str, *messages: str) -> list[dict[str, Any]]:
    """Each message's answer, on one connection let in with ``token``, then its ``status``."""
    answers = []
    async with open_websocket_url(f"ws://127.0.0.1:{port}/?token={token}") as ws:
        assert (await recv_json(ws))["type"] == "connection"
        for message in messages:
            await ws.send_message(message)
            answers.append(await recv_json(ws))
        await ws.send_message('{"type": "status"}')
        answers.append(await recv_type(ws, "status"))
    return answers


def keyed(
    keys: str = f"k1={KEY_1},k2={KEY_2}", **env: str
) -> contextlib.AbstractAsyncContextManager[tuple[trio.Process, int]]:
    """A real server on the demo clip with these signing keys (and ``env``)."""
    return serving("--source", "demo", env={"TRACKERD_SIGNING_KEYS": keys, **env})


@capped
async def test_a_session_token_is_let_in_and_names_its_push_session() -> None:
    async with keyed() as (_, port):
        good = mint(claims(now=time.time(), grants=["push"]))
        started, status = await command(port, good, PUSH)
        assert started["type"] == "tracking_started" and started["session"] == "interview-42"
        assert status["session"] == status["sid"] == "interview-42"
        assert status["sub"] == "candidate-7"
        rotated = mint(claims(now=time.time(), sid="interview-43"), KEY_2, "k2")
        assert (await command(port, rotated, PUSH))[0]["session"] == "interview-43"
        # Keys and no shared token: a token is required, and a random one is no JWT.
        assert await upgrade(port, "") == (401, "token required")
        assert (await upgrade(port, SHARED))[0] == 401


@capped
async def test_a_grant_is_needed_for_each_kind_of_tracking() -> None:
    async with keyed() as (_, port):
        stream_only = mint(claims(now=time.time(), grants=["stream"]))
        refused, status = await command(port, stream_only, PUSH)
        assert (refused["type"], refused["code"]) == ("error", "not_granted")
        assert "does not grant push (it grants stream)" in refused["message"]
        assert "session" not in status and not status["is_tracking"], "nothing changed"
        push_only = mint(claims(now=time.time(), grants=["push", "observe"]))
        refused, status = await command(port, push_only, '{"type": "start_tracking"}')
        assert refused["code"] == "not_granted" and not status["is_tracking"]
        # A granted start_tracking on the server's camera is answered with its eye_data.
        async with open_websocket_url(f"ws://127.0.0.1:{port}/?token={stream_only}") as ws:
            await recv_json(ws)
            await ws.send_message('{"type": "start_tracking"}')
            assert (await recv_json(ws))["type"] == "eye_data"


@capped
async def test_each_failure_is_a_401_with_the_reason_access_gives_and_metrics_count() -> None:
    """Tokens minted against the real clock; the shared token beside the keys still works."""
    now = time.time()
    cases = {
        "token-expired": mint(claims(now=now, exp=int(now) - 60)),
        "token-not-yet-valid": mint(claims(now=now, nbf=int(now) + 600)),
        "token-signature": mint(claims(now=now), OTHER),
        "token-kid": mint(claims(now=now), KEY_1, "k9"),
        "token-alg": unsigned_none(claims(now=now)),
        "token-claim": mint(claims(now=now, sid=None)),
        "token-grant": mint(claims(now=now, grants=["admin"])),
        "token-metadata": mint(claims(now=now, metadata={"x": "y" * 4096})),
        "token-malformed": "not-a-jwt",
    }
    hs512 = mint(claims(now=now), "z" * 64, alg="HS512")
    async with keyed(TRACKERD_TOKEN=SHARED) as (_, port):
        for cause, token in cases.items():
            code, reason = await upgrade(port, token)
            verdict = await access(port, token)
            assert code == 401 and reason, cause
            assert verdict == {"admitted": False, "status": 401, "reason": reason, "cause": cause}
        assert (await upgrade(port, hs512))[1] == "token alg must be HS256"
        assert (await access(port, cases["token-claim"]))["reason"] == "token claim sid is missing"
        assert (await access(port, mint(claims(now=now))))["admitted"]
        # The shared token: every grant, and no session token's identity.
        started, shared_status = await command(port, SHARED, PUSH)
        assert started["type"] == "tracking_started" and "sid" not in shared_status
        _, _, body = await trio.to_thread.run_sync(http_get, port, f"/metrics?token={SHARED}")
        for cause in cases:
            expected = 2 if cause == "token-alg" else 1
            line = f'trackerd_connections_refused_total{{cause="{cause}",status="401"}} {expected}'
            assert line in body, cause
        # A session token never opens /metrics: that stays behind the shared token.
        good = mint(claims(now=now))
        code, _, _ = await trio.to_thread.run_sync(http_get, port, f"/metrics?token={good}")
        assert code == 401


@capped
async def test_a_removed_kid_is_refused() -> None:
    """The rotation's last step: k1 dropped from the list; its tokens stop working, k2's do not."""
    async with keyed(f"k2={KEY_2}") as (_, port):
        now = time.time()
        assert await upgrade(port, mint(claims(now=now))) == (
            401,
            "token kid names no current signing key",
        )
        assert (await upgrade(port, mint(claims(now=now), KEY_2, "k2")))[0] == 101


@capped
async def test_a_second_connection_cannot_open_the_same_session() -> None:
    async with keyed() as (_, port):
        token = mint(claims(now=time.time()))
        url = f"ws://127.0.0.1:{port}/?token={token}"
        async with open_websocket_url(url) as first:
            await recv_json(first)
            await first.send_message(PUSH)
            assert (await recv_json(first))["session"] == "interview-42"
            (refused, _) = await command(port, token, PUSH)
            assert (refused["type"], refused["code"]) == ("error", "session_in_use")
        # Once the first has gone (the server notices its close as it can: ask until then,
        # under the test's cap), the session id is free again.
        while (answer := (await command(port, token, PUSH))[0]).get("code") == "session_in_use":
            pass
        assert answer["session"] == "interview-42"
