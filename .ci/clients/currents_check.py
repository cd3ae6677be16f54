"""Currents files on a real S3-compatible server (moto), read by fastavro and checked against
the schemas in ../shared/currents-schemas and against what was ingested.

Usage: python currents_check.py BASE_URL ADMIN_TOKEN REST_KEY S3_ENDPOINT SCHEMA_DIR [SAVE_DIR]
Every file read is also saved into SAVE_DIR (for the Java reader) when given.
"""

import io
import json
import sys
from pathlib import Path

import boto3
import fastavro
import requests


def check(condition, message):
    if not condition:
        raise SystemExit(f"currents check failed: {message}")


def main():
    url, admin, key, s3_endpoint, schema_dir = sys.argv[1:6]
    save_dir = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    as_admin = {"Authorization": f"Bearer {admin}"}
    as_key = {"Authorization": f"Bearer {key}"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="eddy-currents")
    for name, codec in [("plain", "null"), ("packed", "deflate")]:
        r = requests.post(f"{url}/eddy/v1/workspaces/default/currents", headers=as_admin, json={
            "name": name, "type": "s3", "bucket": "eddy-currents", "prefix": name, "endpoint": s3_endpoint,
            "access_key_id": "testing", "secret_access_key": "testing", "codec": codec})
        check(r.status_code == 201, f"create {name}: {r.status_code} {r.text}")

    events = [{"external_id": f"cur-{i}", "name": "played", "time": "2024-05-01T12:00:00Z",
               "properties": {"level": i, "tags": ["a", "b"]}} for i in range(40)]
    purchases = [{"external_id": "cur-1", "product_id": "book", "currency": "EUR", "price": 9.5,
                  "quantity": 2, "time": "2024-05-01T12:00:00Z"}]
    attributes = [{"external_id": "cur-2", "email": "cur2@example.com", "email_subscribe": "opted_in",
                   "subscription_groups": [{"subscription_group_id": "sg", "subscription_state": "subscribed"}]}]
    r = requests.post(f"{url}/users/track", headers=as_key,
                      json={"attributes": attributes, "events": events, "purchases": purchases})
    check(r.status_code == 201, f"track {r.status_code} {r.text}")
    r = requests.post(f"{url}/users/delete", headers=as_key, json={"external_ids": ["cur-3"]})
    check(r.status_code == 201, f"delete {r.status_code}")
    send = {"id": "send-1", "user_id": "b", "external_user_id": "cur-1", "time": 1714564800,
            "email_address": "cur1@example.com", "campaign_name": "spring"}
    r = requests.post(f"{url}/currents/events", headers=as_key,
                      json={"events": [{"event_type": "users.messages.email.Send", "record": send}]})
    check(r.status_code == 201, f"producer event {r.status_code} {r.text}")

    expected = {"users.behaviors.CustomEvent": 40, "users.behaviors.Purchase": 2,
                "users.behaviors.subscription.GlobalStateChange": 1,
                "users.behaviors.subscriptiongroup.StateChange": 1,
                "users.UserDeleteRequest": 1, "users.messages.email.Send": 1}
    for name in ["plain", "packed"]:
        r = requests.post(f"{url}/eddy/v1/workspaces/default/currents/{name}/flush", headers=as_admin)
        check(r.status_code == 200 and r.json()["pending"] == 0, f"flush {name}: {r.text}")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="eddy-currents", Prefix=f"{name}/")["Contents"]]
        counts = {}
        for object_key in keys:
            check("+" in object_key.rsplit("/", 1)[1] and object_key.endswith(".avro"), f"key {object_key}")
            event_type = object_key.split("/event_type=")[1].split("/")[0]
            body = s3.get_object(Bucket="eddy-currents", Key=object_key)["Body"].read()
            if save_dir:
                (save_dir / object_key.replace("/", "_")).write_bytes(body)
            reader = fastavro.reader(io.BytesIO(body))
            check(reader.codec == codec_of(name), f"{object_key}: codec {reader.codec}")
            original = fastavro.parse_schema(json.loads((Path(schema_dir) / f"{event_type}.avsc").read_text()))
            records = list(reader)
            check(records, f"{object_key} is empty")
            for record in records:
                check(fastavro.validation.validate(record, original, raise_errors=False), f"{event_type} record {record}")
            counts[event_type] = counts.get(event_type, 0) + len(records)
            if event_type == "users.behaviors.CustomEvent":
                first = min(records, key=lambda r: json.loads(r["properties"])["level"])
                check(first["name"] == "played" and first["external_user_id"] == "cur-0", f"custom event {first}")
                check(json.loads(first["properties"]) == {"level": 0, "tags": ["a", "b"]}, f"properties {first}")
                check(first["time"] == 1714564800, f"time {first['time']}")
            if event_type == "users.messages.email.Send":
                check(records[0]["campaign_name"] == "spring" and records[0]["id"] == "send-1", f"send {records[0]}")
        check(counts == expected, f"{name}: {counts}")
    print("currents to S3 (moto) read by fastavro against the shared schemas: all checks passed")


def codec_of(name):
    return "null" if name == "plain" else "deflate"


if __name__ == "__main__":
    main()
