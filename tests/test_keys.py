"""API keys: hashed storage, the cache, and the command-line interface."""

from __future__ import annotations

import asyncio
import json

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
