"""The S3 store of the stack, checked with boto3: buckets and a multipart round trip."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from tasks.catalog import s3_client
from tasks.settings import LAYERS

pytestmark = pytest.mark.stack


def test_the_three_layer_buckets_exist(stack_settings):
    names = {b["Name"] for b in s3_client(stack_settings, "admin").list_buckets()["Buckets"]}
    assert {"lakehouse-bronze", "lakehouse-silver", "lakehouse-gold"} <= names
    assert [stack_settings.bucket(layer) for layer in LAYERS] == ["lakehouse-bronze", "lakehouse-silver", "lakehouse-gold"]


def test_multipart_upload_over_16mb_round_trips(stack_settings):
    client = s3_client(stack_settings, "admin")
    bucket, key = "lakehouse-bronze", f"checks/multipart-{uuid.uuid4().hex}.bin"
    part_size = 5 * 1024 * 1024
    payload = os.urandom(17 * 1024 * 1024 + 123)  # 4 parts, the last one short
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for number, start in enumerate(range(0, len(payload), part_size), start=1):
        chunk = payload[start : start + part_size]
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=chunk)["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    assert len(parts) == 4
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts})
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(body) == len(payload)
        assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
    finally:
        client.delete_object(Bucket=bucket, Key=key)


def test_wrong_credentials_are_refused(stack_settings):
    from botocore.exceptions import ClientError

    bad = stack_settings.model_copy(update={"s3_access_key_id": "nobody"})
    with pytest.raises(ClientError):
        s3_client(bad, "admin").list_objects_v2(Bucket="lakehouse-bronze")
