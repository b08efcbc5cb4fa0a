"""API keys: hashed storage, the cache, and the command-line interface."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aisix import cli
from aisix.auth import KeyCache, hash_key, issue_key
from aisix.errors import GatewayError


def raw_items(store, table):
    return store.client.scan(TableName=table)["Items"]


def test_keys_are_stored_only_as_hashes(store):
    secret, record = issue_key(store, "team", frozenset({"my-gpt4-mini"}), rpm=5, tpm=100)
    dump = json.dumps(raw_items(store, store.keys_table))
    assert secret not in dump
    assert hash_key(secret) in dump
    assert store.get_key(hash_key(secret)) == record


def test_cache_serves_repeat_lookups_and_refuses_unknown_and_revoked_keys(store):
    secret, record = issue_key(store, "team")
    lookups = []

    async def lookup(key_hash):
        lookups.append(key_hash)
        return store.get_key(key_hash)

    cache = KeyCache(lookup, ttl=60)

    async def scenario():
        assert await cache.authenticate(secret) == record
        assert await cache.authenticate(secret) == record
        for _ in range(3):
            with pytest.raises(GatewayError) as info:
                await cache.authenticate("sk-aisix-unknown")
            assert info.value.status == 401
        store.set_enabled(record.key_id, False)
        cache.clear()
        with pytest.raises(GatewayError, match="revoked"):
            await cache.authenticate(secret)

    asyncio.run(scenario())
    assert lookups.count(hash_key(secret)) == 2, "one lookup per cache lifetime"
    assert lookups.count(hash_key("sk-aisix-unknown")) == 1, "unknown keys are cached too"


def test_a_key_in_use_is_read_again_ahead_of_expiry_without_a_call_waiting_for_it(store):
    """Past half its cache time a key is read again in the background; the call goes on at once. A record
    is still never served past its time: if the read ahead has not answered by then, the call waits."""
    from conftest import FakeClock

    secret, record = issue_key(store, "team")
    clock = FakeClock()
    answer = {"gate": None}
    lookups = []

    async def lookup(key_hash):
        lookups.append(key_hash)
        if answer["gate"] is not None:
            await answer["gate"].wait()
        return store.get_key(key_hash)

    cache = KeyCache(lookup, ttl=10, clock=clock)

    async def scenario():
        await cache.authenticate(secret)
        assert len(lookups) == 1
        clock.advance(4)
        await cache.authenticate(secret)
        assert len(lookups) == 1, "fresh and not yet half-way: no read"
        answer["gate"] = asyncio.Event()
        clock.advance(2)  # 6 s: past half-way
        assert await cache.authenticate(secret) == record, "served at once while the read ahead is out"
        await asyncio.sleep(0)
        assert len(lookups) == 2
        assert await cache.authenticate(secret) == record
        assert len(lookups) == 2, "one read ahead at a time"
        clock.advance(4.5)  # 10.5 s: the first read's record has had its time; the read ahead has not answered
        waiting = asyncio.ensure_future(cache.authenticate(secret))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done(), "a record past its time is not served: the call waits for the read"
        answer["gate"].set()
        assert await waiting == record
        assert len(lookups) == 2, "the waiting call joined the read that was out"
        clock.advance(5)  # 15.5 s: the read of 6 s is good until 16 s and was due again at 11 s
        await cache.authenticate(secret)
        await asyncio.sleep(0)
        assert len(lookups) == 3

    asyncio.run(scenario())


def test_concurrent_misses_share_one_lookup(store):
    secret, record = issue_key(store, "team")
    lookups = []

    async def lookup(key_hash):
        lookups.append(key_hash)
        await asyncio.sleep(0.05)
        return store.get_key(key_hash)

    cache = KeyCache(lookup, ttl=60)

    async def burst():
        return await asyncio.gather(*(cache.authenticate(secret) for _ in range(50)))

    assert asyncio.run(burst()) == [record] * 50
    assert len(lookups) == 1


ROOT = Path(__file__).resolve().parent.parent
MODELS = "models:\n" + "".join(
    f"  - name: {name}\n    model: gpt-4o-mini\n    base_url: http://127.0.0.1:9/v1\n"
    for name in ("my-gpt4-mini", "other")
)


@pytest.fixture(autouse=True)
def models_file(monkeypatch, tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(MODELS)
    monkeypatch.setenv("AISIX_CONFIG", str(path))
    return path


def run_cli(monkeypatch, store, capsys, *args):
    monkeypatch.setenv("AISIX_KEYS_TABLE", store.keys_table)
    monkeypatch.setenv("AISIX_COUNTERS_TABLE", store.counters_table)
    monkeypatch.setenv("AISIX_DYNAMODB_ENDPOINT", store.client.meta.endpoint_url)
    code = cli.main(list(args))
    return code, capsys.readouterr().out


def test_cli_creates_lists_and_revokes_keys(monkeypatch, store, capsys):
    code, out = run_cli(monkeypatch, store, capsys, "keys", "create", "--name", "team-a", "--models",
                        "my-gpt4-mini,other", "--rpm", "60", "--tpm", "1000")
    assert code == 0
    secret = out.split("secret: ")[1].split()[0]
    key_id = out.split("created ")[1].split()[0]
    record = store.get_key(hash_key(secret))
    assert (record.name, record.models, record.rpm, record.tpm) == ("team-a", frozenset({"my-gpt4-mini", "other"}), 60, 1000)

    code, out = run_cli(monkeypatch, store, capsys, "keys", "list")
    assert key_id in out and "team-a" in out and "enabled" in out
    assert secret not in out

    code, out = run_cli(monkeypatch, store, capsys, "keys", "revoke", key_id)
    assert code == 0 and store.get_key(hash_key(secret)).enabled is False
    assert "revoked" in run_cli(monkeypatch, store, capsys, "keys", "list")[1]

    code, _ = run_cli(monkeypatch, store, capsys, "keys", "revoke", "key_doesnotexist")
    assert code == 1


def test_counter_windows_expire_by_ttl(store):
    ttl = store.client.describe_time_to_live(TableName=store.counters_table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    store.take("key_x", 999_960, 1, rpm=10, tpm=None)
    item = raw_items(store, store.counters_table)[0]
    assert int(item["expires_at"]["N"]) == 999_960 + 120


def test_cli_refuses_a_model_the_models_file_does_not_declare(monkeypatch, store, capsys):
    monkeypatch.setenv("AISIX_DYNAMODB_ENDPOINT", store.client.meta.endpoint_url)
    monkeypatch.setenv("AISIX_KEYS_TABLE", store.keys_table)
    code = cli.main(["keys", "create", "--name", "typo", "--models", "my-gpt4-mini,gpt4-mini"])
    out, err = capsys.readouterr()
    assert code == 1 and "secret" not in out and err.count("\n") == 1
    assert "'gpt4-mini' not declared in" in err and "my-gpt4-mini, other" in err
    assert store.list_keys() == [], "no key is created"


def no_aws_credentials(**extra: str) -> dict[str, str]:
    """The environment of a new user: no AWS credentials anywhere botocore looks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AISIX_"))}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials",
        AWS_CONFIG_FILE="/nonexistent/config",
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )
    return env


def python_m_aisix(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aisix", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_against_a_local_dynamodb_needs_no_aws_credentials(store):
    env = no_aws_credentials(
        AISIX_DYNAMODB_ENDPOINT=store.client.meta.endpoint_url,
        AISIX_KEYS_TABLE=store.keys_table,
        AISIX_COUNTERS_TABLE=store.counters_table,
    )
    created = python_m_aisix(env, "keys", "create", "--name", "newcomer", "--models", "my-gpt4-mini")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.split("secret: ")[1].split()[0]
    assert store.get_key(hash_key(secret)).name == "newcomer", "the key is in the table the gateway reads"
    listed = python_m_aisix(env, "keys", "list")
    assert listed.returncode == 0 and "newcomer" in listed.stdout, listed.stderr


def test_cli_against_aws_without_credentials_says_so_in_one_line():
    result = python_m_aisix(no_aws_credentials(AWS_REGION="eu-west-1"), "keys", "list")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: no AWS credentials found for DynamoDB in eu-west-1")


def test_cli_with_a_missing_table_says_which_and_how_to_create_it(monkeypatch, store, capsys):
    monkeypatch.setenv("AISIX_KEYS_TABLE", "no-such-table")
    monkeypatch.setenv("AISIX_DYNAMODB_ENDPOINT", store.client.meta.endpoint_url)
    assert cli.main(["keys", "list"]) == 1
    err = capsys.readouterr().err
    assert "no table 'no-such-table'" in err and "python -m aisix tables create" in err


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [(None, False), ("http://127.0.0.1:3005", True), ("http://host.docker.internal:8000", True),
     ("http://dynamodb-local:8000", True), ("https://dynamodb.eu-west-1.amazonaws.com", False),
     ("https://dynamodb.cn-north-1.amazonaws.com.cn", False)],
)
def test_which_endpoints_take_dummy_credentials(endpoint, local):
    assert cli.is_local_endpoint(endpoint) is local
