"""Property-based tests (hypothesis) for SSE parsing, the relay and request validation, and a
schemathesis run of the real gateway against its own OpenAPI description (GET /openapi.json).

The properties run the gateway in process (`faultkit.InProcess`: memory key store, upstream
answered by a function) so hundreds of examples take a few seconds; the schemathesis run goes
through uvicorn, moto and the mock upstream like a client would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from aisix.streaming.sse import SSEDecoder, decode_chunk
from faultkit import InProcess

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


# --- SSE decoding -------------------------------------------------------------------------------

# One data line's value: anything but the line breaks that would end it.
line_value = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
noise_line = st.sampled_from([":", ": keep-alive", ":comment with data: inside", "event: message", "id: 7",
                              "retry: 100", "datax: not a data field", "event:"])


@st.composite
def sse_streams(draw) -> tuple[bytes, list[str]]:
    """An event stream (LF, CRLF or CR line ends; comments, other fields, optional BOM) and its events."""
    ending = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    expected: list[str] = []
    lines: list[str] = []
    for values in draw(st.lists(st.lists(line_value, min_size=1, max_size=3), max_size=6)):
        lines.extend(draw(st.lists(noise_line, max_size=2)))
        for value in values:
            if value.startswith(" ") or draw(st.booleans()):
                lines.append("data: " + value)  # exactly one space after the colon is dropped
            elif value:
                lines.append("data:" + value)
            else:
                lines.append(draw(st.sampled_from(["data", "data:", "data: "])))
        lines.append("")
        expected.append("\n".join(values))
    if draw(st.booleans()):  # an event cut off by the end of the stream is never dispatched
        lines.append("data: " + draw(line_value))
    if ending == "mixed":  # LF and CRLF mix freely (a CR alone before a LF would be a CRLF)
        text = "".join(line + draw(st.sampled_from(["\n", "\r\n"])) for line in lines)
    else:
        text = "".join(line + ending for line in lines)
    if lines and lines[-1] != "" and draw(st.booleans()):
        text = text[: -len(ending) if ending != "mixed" else None].rstrip("\r\n")
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode(), expected


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(raw[start:point])
        start = point
    pieces.append(raw[start:])
    return [p for p in pieces if p]


@FAST
@given(sse_streams(), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
@example((b"data: a\r", ["a"]), [])  # CR at the very end of a read ... (see next)
@example((b"data: a\r\rdata: b\r\n\r\n", ["a", "b"]), [8])  # CR-CR split between the two CRs
@example((b"data: a\r\n\r\n", ["a"]), [8])  # a CRLF split between its CR and LF is one line end
@example(("data: \u00e9\u4e2d\n\n".encode(), ["\u00e9\u4e2d"]), [7, 9])  # cuts inside UTF-8 characters
def test_sse_decoder_yields_exactly_the_events_however_the_bytes_are_split(stream, cuts):
    raw, expected = stream
    if raw == b"data: a\r":
        expected = []  # no blank line: the event is not complete
    decoder = SSEDecoder()
    events = [data for piece in split(raw, cuts) for data in decoder.feed(piece)]
    assert [e for e in events if e] == [e for e in expected if e]


@settings(max_examples=30, deadline=None, database=None)
@given(st.integers(min_value=1, max_value=64), st.sampled_from([b"x", b"\xc3\xa9", b"data: "]))
def test_sse_decoder_memory_is_bounded(limit_kib, filler):
    """However an endless event arrives, the decoder refuses it once it passes the limit."""
    from aisix.streaming.sse import EventTooLarge

    decoder = SSEDecoder(limit_kib * 1024)
    piece = b"data: " + filler * 1000
    with pytest.raises(EventTooLarge):
        for _ in range(limit_kib * 1024 // 1000 + 3):
            decoder.feed(piece)
            if filler == b"data: ":
                decoder.feed(b"\n")  # many data lines of one event count together


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=8))
def test_only_json_objects_are_chunks(value):
    data = json.dumps(value)
    assert (decode_chunk(data) is not None) == isinstance(value, dict)
    assert decode_chunk(data + " ") == decode_chunk(data)
    assert decode_chunk(data + "x") is None
    assert decode_chunk(data[:-1]) is None or (isinstance(value, (int, float)) and len(data) > 1)


# --- the relay, in process ----------------------------------------------------------------------


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> Any:
        for piece in self.pieces:
            yield piece


def chunk(content: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


BAD_EVENTS = ["{not json", "[1, 2]", '"text"', "42", "null", '{"a": 1', "<html>502</html>", '{"a": 1} x',
              '{"error": {"message": "boom"}}', '{"error": "plain string"}']


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@FAST
@given(
    contents=st.lists(st.text(max_size=8), max_size=8),
    bad=st.none() | st.tuples(st.integers(min_value=0, max_value=8), st.sampled_from(BAD_EVENTS)),
    usage=st.booleans(),
    wants_usage=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_relay_passes_good_events_through_and_ends_bad_streams_with_one_error(
    runner, contents, bad, usage, wants_usage, line_end, cuts
):
    events = [json.dumps(chunk(c)) for c in contents]
    usage_chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    if usage:
        events.append(json.dumps(usage_chunk))
    cut_at = None
    if bad is not None:
        cut_at = min(bad[0], len(events))
        events.insert(cut_at, bad[1])
    raw = "".join(f"data: {e}{line_end}{line_end}" for e in events) + f"data: [DONE]{line_end}{line_end}"

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Pieces(split(raw.encode(), cuts)))

    gw = InProcess(upstream)
    gw.store.add_key("sk-aisix-relay")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if wants_usage:
        body["stream_options"] = {"include_usage": True}

    async def call() -> httpx.Response:
        async with gw.client() as client:
            return await client.post("/v1/chat/completions", json=body,
                                     headers={"authorization": "Bearer sk-aisix-relay"})

    response = runner.run(call())
    out = [block[6:] for block in response.text.split("\n\n") if block.startswith("data: ")]
    good = events[:cut_at] if cut_at is not None else events
    if usage and not wants_usage:
        good = [e for e in good if e != json.dumps(usage_chunk)]
    if cut_at is None:
        assert out == good + ["[DONE]"]
    else:
        assert out[:-1] == good
        error = json.loads(out[-1])["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "upstream_error"
        assert "[DONE]" not in out


# --- request validation, in process --------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# Each checked field is drawn right or wrong with even odds, so every combination comes up.
good_models = st.sampled_from(["m", "Other-Model", "unknown-model", "M", "m "])
bad_models = st.sampled_from(["", None, 0, True, ["m"], {"m": 1}]) | json_values.filter(
    lambda v: not isinstance(v, str) or not v)
good_messages = st.lists(st.fixed_dictionaries({"role": st.text(max_size=6)}, optional={"content": json_values}),
                         min_size=1, max_size=3)
bad_messages = st.one_of(
    st.just([]),
    json_values.filter(lambda v: not isinstance(v, list)),
    st.tuples(good_messages, st.one_of(
        json_values.filter(lambda v: not isinstance(v, dict)),
        st.fixed_dictionaries({"role": json_values.filter(lambda v: not isinstance(v, str))}),
        st.fixed_dictionaries({}, optional={"content": json_values}),
    ), st.integers(0, 3)).map(lambda t: t[0][: t[2]] + [t[1]] + t[0][t[2]:]),
)
good_streams = st.sampled_from([True, False, None])
bad_streams = st.sampled_from([0, 1, "true", "", [], {}]) | json_values.filter(
    lambda v: v is not None and not isinstance(v, bool))


@st.composite
def request_bodies(draw) -> Any:
    """Bodies whose model, messages and stream are each missing, right or wrong; sometimes any JSON."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    body: dict[str, Any] = draw(st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in ("model", "stream", "messages", "stream_options")),
        json_values, max_size=3))
    for name, good, bad in (("model", good_models, bad_models), ("messages", good_messages, bad_messages),
                            ("stream", good_streams, bad_streams)):
        choice = draw(st.sampled_from(["good", "good", "bad", "missing"]))
        if choice != "missing":
            body[name] = draw(good if choice == "good" else bad)
    return body


def oracle(body: Any) -> tuple[int, str | None]:
    """What the gateway documents (README "Errors", /openapi.json) for a body."""
    if not isinstance(body, dict):
        return 400, None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return 400, "model"
    items = body.get("messages")
    if not isinstance(items, list) or not items:
        return 400, "messages"
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            return 400, f"messages.[{index}]"
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        return 400, "stream"
    if body["model"] not in ("m", "Other-Model"):
        return 404, "model"
    return 200, None


@pytest.fixture(scope="module")
def echo_gateway() -> InProcess:
    """An in-process gateway whose upstream records what it got and answers briefly."""
    seen: list[dict[str, Any]] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        seen.append({"body": sent, "headers": dict(request.headers)})
        if sent.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=f"data: {json.dumps(chunk('ok'))}\n\ndata: [DONE]\n\n".encode())
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "choices": [],
                                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    gw = InProcess(upstream)
    gw.seen = seen  # type: ignore[attr-defined]
    gw.store.add_key("sk-aisix-all")
    gw.store.add_key("sk-aisix-only-m", models=frozenset({"m"}))
    return gw


def post(runner: asyncio.Runner, gw: InProcess, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async def call() -> httpx.Response:
        async with gw.client() as client:
            return await client.post("/v1/chat/completions", content=content, headers=headers)

    return runner.run(call())


AUTH = {"authorization": "Bearer sk-aisix-all", "content-type": "application/json"}


@FAST
@given(request_bodies())
def test_request_validation_matches_the_documented_rules(runner, echo_gateway, body):
    seen = echo_gateway.seen
    before = len(seen)
    response = post(runner, echo_gateway, json.dumps(body).encode(), AUTH)
    status, param = oracle(body)
    assert response.status_code == status, (body, response.text)
    if status == 200:
        sent = seen[-1]["body"]
        assert len(seen) == before + 1
        assert sent.pop("model") == f"up-{body['model']}"
        if body.get("stream") is True:
            options = sent.pop("stream_options")
            assert options["include_usage"] is True
            body = {k: v for k, v in body.items() if k != "stream_options"}
        assert sent == {k: v for k, v in body.items() if k != "model"}, "every other field passes untouched"
    else:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
        assert len(seen) == before, "a refused request never reaches the upstream"


@FAST
@given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_any_bytes_get_an_answer_never_a_500(runner, echo_gateway, raw):
    response = post(runner, echo_gateway, raw, AUTH)
    assert response.status_code < 500
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@FAST
@given(st.sampled_from(["m", "Other-Model"]).flatmap(lambda alias: st.one_of(
    st.just(alias),
    st.lists(st.booleans(), min_size=len(alias), max_size=len(alias)).map(
        lambda flips: "".join(c.swapcase() if f else c for c, f in zip(alias, flips))),
    st.tuples(st.sampled_from(["", " ", "\t", "\u200b", "\ufeff", "/", "models/"]),
              st.sampled_from(["", " ", "\n", "\u200b", ":latest", "-0613"])).map(lambda t: t[0] + alias + t[1]),
    st.just(alias.upper()), st.just(f"up-{alias}"), st.text(max_size=10),
)))
def test_a_model_allow_list_admits_exactly_its_aliases(runner, echo_gateway, model):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {**AUTH, "authorization": "Bearer sk-aisix-only-m"}
    before = len(echo_gateway.seen)
    status = post(runner, echo_gateway, json.dumps(body).encode(), headers).status_code
    expected = 200 if model == "m" else 403 if model == "Other-Model" else 404 if model else 400
    assert status == expected, model
    assert len(echo_gateway.seen) == before + (status == 200)


@FAST
@given(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=60))
def test_unknown_keys_are_refused_and_never_echoed(runner, echo_gateway, token):
    assume(token not in ("sk-aisix-all", "sk-aisix-only-m"))
    body = json.dumps({"model": "m", "messages": [{"role": "user"}]}).encode()
    response = post(runner, echo_gateway, body, {**AUTH, "authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    # A token that is part of the fixed refusal itself (e.g. "invalid_") cannot show an echo.
    reference = post(runner, echo_gateway, body, {**AUTH, "authorization": "Bearer sk-unknown-reference"}).text
    assume(token not in reference)
    assert token not in response.text


# Found by the schemathesis run below, kept as examples: JSON Schema's integer takes 64.0, and
# count_tokens checks the Messages rules before reading the request.
def test_a_whole_number_written_as_a_float_is_an_integer(runner, echo_gateway):
    async def call() -> list[httpx.Response]:
        async with echo_gateway.client() as client:
            return [
                await client.post("/v1/embeddings", json={"model": "m", "input": "hi", "dimensions": 64.0},
                                  headers=AUTH),
                await client.post("/v1/embeddings", json={"model": "m", "input": "hi", "dimensions": 64.5},
                                  headers=AUTH),
                await client.post("/v1/messages", headers={"x-api-key": "sk-aisix-all"}, json={
                    "model": "m", "max_tokens": 16.0, "messages": [{"role": "user", "content": "hi"}]}),
            ]

    whole, fraction, messages = runner.run(call())
    assert whole.status_code == 200, whole.text
    assert fraction.status_code == 400 and fraction.json()["error"]["param"] == "dimensions"
    assert messages.status_code == 200, messages.text
    sent = echo_gateway.seen[-1]["body"]["max_tokens"]
    assert sent == 16 and type(sent) is int  # translated: written as an integer


@pytest.mark.parametrize("body", [{"model": "m"}, {"model": "m", "messages": "hi"}, {"model": "m", "messages": [1]}])
def test_count_tokens_refuses_a_malformed_request_in_anthropics_words(runner, echo_gateway, body):
    async def call() -> httpx.Response:
        async with echo_gateway.client() as client:
            return await client.post("/v1/messages/count_tokens", json=body, headers={"x-api-key": "sk-aisix-all"})

    response = runner.run(call())
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["message"].startswith("messages")


# --- schemathesis against GET /openapi.json -------------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import SchemathesisConfig  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_gateway(moto_endpoint, upstream) -> Iterator[tuple[str, str]]:
    """A real gateway (uvicorn, moto, mock upstream) with an alias "0", the string hypothesis tries first."""
    from aisix.app import create_app
    from aisix.auth import issue_key
    from aisix.config import Settings, parse_config
    from aisix.gateway import Gateway
    from aisix.store import AsyncStore, Store, make_client
    from conftest import ServerThread

    suffix = uuid.uuid4().hex[:8]
    store = Store(make_client(moto_endpoint, "us-east-1"), f"keys-{suffix}", f"counters-{suffix}")
    store.create_tables()
    config = parse_config({"models": [
        {"name": name, "model": "gpt-4o-mini", "base_url": upstream.base_url, "api_key_env": "K", "timeout": 5}
        for name in ("0", "my-gpt4-mini")
    ]}, {"K": UPSTREAM_KEY})
    settings_ = Settings(keys_table=store.keys_table, counters_table=store.counters_table,
                         dynamodb_endpoint=moto_endpoint, max_body_bytes=64 * 1024)
    gateway = Gateway(settings_, config, AsyncStore(store), hooks=[])
    server = ServerThread(create_app(gateway)).start()
    secret, _ = issue_key(store, "fuzz")
    yield server.url, secret
    server.stop()


def test_the_openapi_description_is_served(fuzz_gateway):
    from aisix.openapi import openapi_document

    url, _ = fuzz_gateway
    assert httpx.get(url + "/openapi.json").json() == json.loads(json.dumps(openapi_document()))


# The fuzz gateway's models are OpenAI-compatible, so these operations are translated calls: a
# request that passes the dialect's rules (the document) may still name a field the provider cannot
# express, a 400. That 400 must name a field of the request (`a_refusal_names_a_field_of_the_request`).
TRANSLATED = r"^/(v1/)?responses$|^/v1/messages"
UNVERSIONED = r"^/(chat/completions|responses|embeddings|models)"
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]

# Loaded from the document the app serves (checked equal above): schemathesis' lazy fixture
# loader does not run on pytest 9.
DOCUMENT = __import__("aisix.openapi", fromlist=["openapi_document"]).openapi_document()
CONFIG = SchemathesisConfig.from_dict({
    "generation": {"mode": "all", "max-examples": 25},
    "operations": [
        {
            "include-path-regex": TRANSLATED,
            "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_STATUSES, "400"]}},
        },
        # The unversioned aliases route to the same endpoints: a few examples show the route.
        {"include-path-regex": UNVERSIONED, "generation": {"max-examples": 5}},
    ],
})


def field_root(path: str) -> str:
    """``messages.0.content`` / ``input[2].type=x`` / ``'tools'`` -> the request's top-level key."""
    return path.strip("'\"").split(".")[0].split("[")[0].split("=")[0]


def a_refusal_names_a_field_of_the_request(case: Any, response: Any) -> None:
    """A 400 for a schema-valid body on a translated call names the field it refuses."""
    if response.status_code != 400 or not isinstance(case.body, dict):
        return
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    body = response.json()
    if body.get("type") == "error":  # Anthropic's shape: the field leads the message
        message = body["error"]["message"]
        named = {field_root(word) for word in message.replace(":", " ").split()}
    else:
        named = {field_root(body["error"]["param"] or "")}
    assert named & set(case.body), f"a 400 that names no field of the request: {body}"


@pytest.fixture(scope="module")
def fuzz_session() -> Iterator[Any]:
    """One HTTP session for every generated call: schemathesis otherwise opens a connection per case."""
    import requests

    with requests.Session() as session:
        yield session


def check_against_the_description(case: Any, fuzz_gateway: tuple[str, str], session: Any) -> None:
    url, secret = fuzz_gateway
    # Both ways a client may present a key (x-api-key wins on Anthropic's routes, as Claude Code sends
    # either): schemathesis then probes each route without, and with a wrong, key.
    headers = {"Authorization": f"Bearer {secret}", "x-api-key": secret}
    dimensions = case.body.get("dimensions") if isinstance(case.body, dict) else None
    if case.path.endswith("/embeddings") and isinstance(dimensions, (int, float)) and dimensions > 64:
        case.body["dimensions"] = 64  # still valid; the mock would build a vector that long
    response = case.call_and_validate(base_url=url, session=session, headers=headers, timeout=10)
    assert UPSTREAM_KEY not in response.text
    a_refusal_names_a_field_of_the_request(case, response)


def _operation_test(path: str, method: str, operation: dict[str, Any]) -> Any:
    """A schemathesis test of one operation (a document with only it: `schema.include` does not filter)."""
    alone = {**DOCUMENT, "paths": {path: {method: operation}}}

    @schemathesis.openapi.from_dict(alone, config=CONFIG).parametrize()
    @settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def test(case, fuzz_gateway, fuzz_session):
        check_against_the_description(case, fuzz_gateway, fuzz_session)

    return test


# One test function per operation, so each has its own node id: schemathesis' items for one
# function share theirs on pytest 9, and pytest-xdist (`make test` runs several workers) then ran only one.
for _path, _item in DOCUMENT["paths"].items():
    for _method, _operation in _item.items():
        globals()[f"test_the_gateway_matches_its_openapi_description_{_operation['operationId']}"] = (
            _operation_test(_path, _method, _operation)
        )
