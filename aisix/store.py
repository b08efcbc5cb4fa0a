"""The one place that talks to DynamoDB: API-key records and rate-limit counters.

Built on botocore's client, which is exactly what ``boto3.client("dynamodb")``
returns, without importing boto3's resource layer and s3transfer (about 70 ms
of every Lambda cold start). boto3 is synchronous, so every call the gateway
makes on a request runs in a small thread pool (`AsyncStore`): one slow
DynamoDB call never stalls the streams the same process is relaying.

Tables (see template.yaml):

* keys: partition key ``key_hash`` (S): one item per API key, never the key itself.
* counters: partition key ``pk`` (S) = ``<key_id>#<window start>``, attributes
  ``req`` and ``tok`` (N), and ``expires_at`` (N, the table's TTL attribute).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

T = TypeVar("T")

WINDOW_SECONDS = 60


def window_start(now: float | None = None) -> int:
    """The start of the calendar minute that ``now`` (default: the present) falls in."""
    return int(now if now is not None else time.time()) // WINDOW_SECONDS * WINDOW_SECONDS


class StoreUnavailable(Exception):
    """DynamoDB could not answer (throttled, timed out, down, misconfigured)."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    key_hash: str
    name: str
    models: frozenset[str] | None  # None: every model
    rpm: int | None
    tpm: int | None
    enabled: bool = True
    created_at: int = 0

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class Usage:
    """A window's counters as DynamoDB holds them after an update."""

    requests: int
    tokens: int
    window_start: int


class RateLimited(Exception):
    """The conditional update was refused: the window is full."""

    def __init__(self, usage: Usage) -> None:
        super().__init__("rate limited")
        self.usage = usage


def make_client(
    endpoint_url: str | None,
    region: str,
    max_connections: int = 32,
    timeout: float = 10.0,
    attempts: int = 3,
) -> Any:
    """The DynamoDB client. A call gives up after ``attempts`` tries of ``timeout`` seconds each.

    The gateway passes its own, short settings (``AISIX_DYNAMODB_TIMEOUT_SECONDS``,
    1 s by default: DynamoDB answers in milliseconds, and while it does not,
    requests wait; better a prompt 503 than a hung client). These patient
    defaults are for tools: the key CLI, table set-up, tests.
    """
    config = Config(
        region_name=region,
        max_pool_connections=max_connections,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
    )
    return botocore.session.get_session().create_client(
        "dynamodb", endpoint_url=endpoint_url, config=config
    )


def _record_from_item(item: dict[str, Any]) -> KeyRecord:
    models = item.get("models")
    return KeyRecord(
        key_id=item["key_id"]["S"],
        key_hash=item["key_hash"]["S"],
        name=item.get("name", {}).get("S", ""),
        models=frozenset(models["SS"]) if models and "SS" in models else None,
        rpm=int(item["rpm"]["N"]) if "rpm" in item else None,
        tpm=int(item["tpm"]["N"]) if "tpm" in item else None,
        enabled=item.get("enabled", {}).get("BOOL", True),
        created_at=int(item.get("created_at", {}).get("N", 0)),
    )


def _item_from_record(record: KeyRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "key_hash": {"S": record.key_hash},
        "key_id": {"S": record.key_id},
        "name": {"S": record.name},
        "enabled": {"BOOL": record.enabled},
        "created_at": {"N": str(record.created_at)},
    }
    if record.models is not None:
        item["models"] = {"SS": sorted(record.models)}
    if record.rpm is not None:
        item["rpm"] = {"N": str(record.rpm)}
    if record.tpm is not None:
        item["tpm"] = {"N": str(record.tpm)}
    return item


def _usage_from_item(item: dict[str, Any] | None, window_start: int) -> Usage:
    item = item or {}
    return Usage(
        requests=int(item.get("req", {}).get("N", 0)),
        tokens=int(item.get("tok", {}).get("N", 0)),
        window_start=window_start,
    )


class Store:
    """Synchronous DynamoDB access; the CLI uses it as is, the gateway through `AsyncStore`."""

    def __init__(self, client: Any, keys_table: str, counters_table: str) -> None:
        self.client = client
        self.keys_table = keys_table
        self.counters_table = counters_table

    # -- keys --------------------------------------------------------------

    def get_key(self, key_hash: str) -> KeyRecord | None:
        item = self._call(
            self.client.get_item,
            TableName=self.keys_table,
            Key={"key_hash": {"S": key_hash}},
            ConsistentRead=True,
        ).get("Item")
        return _record_from_item(item) if item else None

    def put_key(self, record: KeyRecord) -> None:
        self._call(
            self.client.put_item,
            TableName=self.keys_table,
            Item=_item_from_record(record),
            ConditionExpression="attribute_not_exists(key_hash)",
        )

    def list_keys(self) -> list[KeyRecord]:
        records: list[KeyRecord] = []
        kwargs: dict[str, Any] = {"TableName": self.keys_table}
        while True:
            page = self._call(self.client.scan, **kwargs)
            records.extend(_record_from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(records, key=lambda r: (r.created_at, r.key_id))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_enabled(self, key_id: str, enabled: bool) -> KeyRecord | None:
        """Enable or disable (revoke) a key by its public id; None when no key has it."""
        for record in self.list_keys():
            if record.key_id == key_id:
                self._call(
                    self.client.update_item,
                    TableName=self.keys_table,
                    Key={"key_hash": {"S": record.key_hash}},
                    UpdateExpression="SET enabled = :e",
                    ExpressionAttributeValues={":e": {"BOOL": enabled}},
                )
                return record
        return None

    # -- rate-limit counters -----------------------------------------------

    def take(
        self, key_id: str, window: int, requests: int, rpm: int | None, tpm: int | None
    ) -> Usage:
        """Take ``requests`` requests from a window, if it has room for all of them.

        One conditional UpdateItem checks the RPM and TPM limits and takes the
        requests atomically, so gateway instances sharing the table never take
        more than the limit between them. Returns the window's counters after
        the update; raises `RateLimited` with the counters as they were when
        there is not enough room.
        """
        conditions = []
        values: dict[str, Any] = {
            ":n": {"N": str(requests)},
            ":exp": {"N": str(window + 2 * WINDOW_SECONDS)},
        }
        if rpm is not None:
            conditions.append("(attribute_not_exists(req) OR req <= :most)")
            values[":most"] = {"N": str(rpm - requests)}
        if tpm is not None:
            conditions.append("(attribute_not_exists(tok) OR tok < :tpm)")
            values[":tpm"] = {"N": str(tpm)}
        kwargs: dict[str, Any] = {
            "TableName": self.counters_table,
            "Key": {"pk": {"S": f"{key_id}#{window}"}},
            "UpdateExpression": "ADD req :n SET expires_at = if_not_exists(expires_at, :exp)",
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        if conditions:
            kwargs["ConditionExpression"] = " AND ".join(conditions)
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            result = self._call(self.client.update_item, **kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise RateLimited(_usage_from_item(exc.response.get("Item"), window)) from None
            raise
        return _usage_from_item(result.get("Attributes"), window)

    def add(
        self, key_id: str, window: int, requests: int = 0, tokens: int = 0, charge_id: str | None = None
    ) -> Usage:
        """Add to a window's counters unconditionally: tokens spent, requests given back (< 0).

        With ``charge_id`` the write is idempotent: the id is kept in the item,
        and a second write with it (a retry after a lost answer, by botocore or
        by the caller) changes nothing.
        """
        kwargs: dict[str, Any] = {
            "TableName": self.counters_table,
            "Key": {"pk": {"S": f"{key_id}#{window}"}},
            "UpdateExpression": "ADD req :r, tok :t SET expires_at = if_not_exists(expires_at, :exp)",
            "ExpressionAttributeValues": {
                ":r": {"N": str(requests)},
                ":t": {"N": str(tokens)},
                ":exp": {"N": str(window + 2 * WINDOW_SECONDS)},
            },
            "ReturnValues": "ALL_NEW",
        }
        if charge_id is not None:
            kwargs["UpdateExpression"] = (
                "ADD req :r, tok :t, charges :ids SET expires_at = if_not_exists(expires_at, :exp)"
            )
            kwargs["ConditionExpression"] = "NOT contains(charges, :id)"
            kwargs["ExpressionAttributeValues"].update({":ids": {"SS": [charge_id]}, ":id": {"S": charge_id}})
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            result = self._call(self.client.update_item, **kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return _usage_from_item(exc.response.get("Item"), window)  # already applied
            raise
        return _usage_from_item(result.get("Attributes"), window)

    def read_window(self, key_id: str, now: float | None = None) -> Usage:
        window = window_start(now)
        item = self._call(
            self.client.get_item,
            TableName=self.counters_table,
            Key={"pk": {"S": f"{key_id}#{window}"}},
            ConsistentRead=True,
        ).get("Item")
        return _usage_from_item(item, window)

    # -- tables --------------------------------------------------------------

    def create_tables(self) -> None:
        """Create both tables (on-demand, TTL on counters) unless they exist."""
        for table, key in ((self.keys_table, "key_hash"), (self.counters_table, "pk")):
            try:
                self.client.create_table(
                    TableName=table,
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceInUseException":
                    raise
                continue
            self.client.get_waiter("table_exists").wait(TableName=table)
            if table == self.counters_table:
                self.client.update_time_to_live(
                    TableName=table,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
                )

    @staticmethod
    def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise
            raise StoreUnavailable(exc.response["Error"]["Code"]) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc


class AsyncStore:
    """The `Store` for the event loop: each call runs in a bounded thread pool."""

    def __init__(self, store: Store, max_workers: int = 32) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="aisix-ddb")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def get_key(self, key_hash: str) -> KeyRecord | None:
        return await self._run(self.store.get_key, key_hash)

    async def take(self, key_id: str, window: int, requests: int, rpm: int | None, tpm: int | None) -> Usage:
        return await self._run(self.store.take, key_id, window, requests, rpm, tpm)

    async def add(
        self, key_id: str, window: int, requests: int = 0, tokens: int = 0, charge_id: str | None = None
    ) -> Usage:
        return await self._run(self.store.add, key_id, window, requests, tokens, charge_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
