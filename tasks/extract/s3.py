"""S3 (and S3-compatible) objects: listed with boto3 (keys, sizes, ETags), read with pyarrow.

Credentials come from the standard AWS chain (environment, profile, instance role), or from
a Prefect Secret block holding a JSON object with `aws_access_key_id` and
`aws_secret_access_key` (and optionally `aws_session_token`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from core.config import Mapping
from core.errors import SourceError, SourceUnavailable
from core.secrets import secret_block
from tasks.extract.files import FileSource, hidden_name, with_members
from tasks.extract.kinds import Kind
from tasks.extract.lakehouse import DELTA_LOG, refuse, table_in
from tasks.extract.units import Unit, suffixes, wanted

#: error codes of an AWS store that is there but cannot serve now (besides any 5xx answer): a
#: later try may work, so they are SourceUnavailable (boto3 has already retried them a few times);
#: S3's, and DynamoDB's (tasks/extract/dynamodb.py)
BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "ServiceUnavailable",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
    }
)


def aws_unavailable(exc: BaseException) -> bool:
    """Whether botocore's `exc` says the store did not answer or said to come back later
    (unreachable, timed out, a 5xx, throttling): SourceUnavailable, retried by an orchestrator."""
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code", "") in BUSY_CODES
    return isinstance(
        exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError)
    )


def s3_credentials(block: str | None) -> dict:
    if not block:
        return {}
    value = secret_block(block)
    data = json.loads(value) if isinstance(value, str) else dict(value)
    return {k: data[k] for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token") if data.get(k)}


def _enclosing_table(client, bucket: str, prefix: str) -> tuple[str, str] | None:
    """(format, root prefix) of a Delta or Iceberg table the prefix is inside of: one short
    listing per parent folder (a prefix is a few folders deep)."""
    parts = [p for p in prefix.split("/") if p]
    for depth in range(len(parts) - 1, -1, -1):
        root = "/".join(parts[:depth])
        at = f"{root}/" if root else ""
        for kind, marker in (("delta", f"{at}{DELTA_LOG}/"), ("iceberg", f"{at}metadata/")):
            page = client.list_objects_v2(Bucket=bucket, Prefix=marker, MaxKeys=20)
            keys = [o["Key"] for o in page.get("Contents", [])]
            if kind == "delta" and keys or kind == "iceberg" and any(k.endswith(".metadata.json") for k in keys):
                return kind, root
    return None


def open_s3(mapping: Mapping) -> FileSource:
    import boto3
    import botocore.exceptions as bx

    cfg = mapping.source.s3
    assert cfg is not None  # source.type s3: the config requires the s3 section
    creds = s3_credentials(cfg.credentials_block)
    name = mapping.source.name
    where = f"s3://{cfg.bucket}/{cfg.prefix}" + (f" at {cfg.endpoint_url}" if cfg.endpoint_url else "")
    client = boto3.client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region, **creds)
    fmt = mapping.source.format or ""
    units = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix=cfg.prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                rel = key[len(cfg.prefix) :].lstrip("/") if cfg.prefix else key
                found = table_in([rel])
                if found is not None:  # a table under the prefix: stop before reading anything
                    raise refuse(name, f"s3://{cfg.bucket}/{cfg.prefix}", found)
                hidden = hidden_name(rel.split("/"), mapping.source.members)
                if hidden or not wanted(key, fmt, mapping.source.members, rel):
                    continue
                units.append(
                    Unit(rel=rel, size=obj["Size"], version=obj["ETag"].strip('"'), path=f"{cfg.bucket}/{key}")
                )
        enclosing = _enclosing_table(client, cfg.bucket, cfg.prefix)
        if enclosing is not None:
            raise refuse(name, f"s3://{cfg.bucket}/{enclosing[1]}", (enclosing[0], "."))
    except bx.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        hint = {
            "NoSuchBucket": "the bucket does not exist",
            "AccessDenied": "access denied: check the credentials and the bucket policy",
            "InvalidAccessKeyId": "the access key is not valid",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
        }.get(code, str(exc))
        busy = aws_unavailable(exc)  # the store's trouble, not the source's: retried
        raise (SourceUnavailable if busy else SourceError)(name, where, hint) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError) as exc:
        raise SourceUnavailable(name, where, f"cannot reach the S3 endpoint: {exc}") from None
    except bx.NoCredentialsError:
        raise SourceError(
            name, where, "no AWS credentials found (environment, profile, role, or source.s3.credentials_block)"
        ) from None
    if not units:
        raise SourceError(name, where, f"no {fmt} objects ({', '.join(suffixes(fmt))}, compressed or zipped) under it")
    units.sort(key=lambda u: u.rel)
    fs = s3_filesystem(cfg.endpoint_url, cfg.region, creds)
    return FileSource(mapping, fs, with_members(mapping, fs, units))


def s3_filesystem(endpoint_url: str | None, region: str | None, creds: dict) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for an endpoint (None: AWS), a region and boto3-style credentials
    (`aws_access_key_id`, ...; empty: the AWS chain)."""
    kwargs: dict[str, Any] = {"region": region}
    if endpoint_url:
        parsed = urlparse(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")  # host:port alone
        kwargs.update(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https")
    if creds:
        kwargs.update(
            access_key=creds.get("aws_access_key_id"),
            secret_key=creds.get("aws_secret_access_key"),
            session_token=creds.get("aws_session_token"),
        )
    return pafs.S3FileSystem(**kwargs)


#: source.type s3: objects, by the manifest of their ETags as files are by theirs
KIND = Kind(open_s3)
