"""Cohort import as Amplitude sends it, a segment on the cohort, and its export to a real
S3-compatible server (moto), read back with boto3 and Python's own zipfile.

Usage: python cohort_export_check.py BASE_URL ADMIN_TOKEN REST_KEY S3_ENDPOINT
"""

import io
import json
import sys
import time
import zipfile

import boto3
import requests


def check(condition, message):
    if not condition:
        raise SystemExit(f"cohort/export check failed: {message}")


def main():
    url, admin, key, s3_endpoint = sys.argv[1:5]
    as_admin = {"Authorization": f"Bearer {admin}"}
    as_key = {"Authorization": f"Bearer {key}"}

    r = requests.put(f"{url}/eddy/v1/partners/amplitude", headers=as_admin, json={"partner_api_key": "amp-partner-key"})
    check(r.status_code == 200, f"register partner {r.status_code} {r.text}")
    r = requests.post(f"{url}/eddy/v1/workspaces/default/partners/amplitude/data-import-key", headers=as_admin)
    secret = r.json()["key"]

    users = [{"external_id": f"ci-{i}", "plan": "pro" if i % 2 else "free"} for i in range(150)]
    for start in range(0, len(users), 75):
        r = requests.post(f"{url}/users/track", headers=as_key, json={"attributes": users[start:start + 75]})
        check(r.status_code == 201, f"track {r.status_code} {r.text}")

    body = {"partner_api_key": "amp-partner-key", "client_secret": secret, "cohort_id": "abcd1234",
            "name": "TEST_COHORT", "created_at": "2021-01-21T19:20:30+05:00"}
    r = requests.post(f"{url}/partners/amplitude/cohorts", json=body)
    check(r.status_code == 201, f"cohort name {r.status_code} {r.text}")
    members = [u["external_id"] for u in users[:100]]
    body = {"partner_api_key": "amp-partner-key", "client_secret": secret, "cohort_id": "abcd1234",
            "cohort_changes": [{"user_ids": members, "device_ids": [], "aliases": []},
                               {"user_ids": ["ci-0"], "should_remove": True}]}
    r = requests.post(f"{url}/partners/amplitude/cohorts/users", json=body)
    check(r.status_code == 201, f"cohort users {r.status_code} {r.text}")
    bad = dict(body, client_secret="nope")
    r = requests.post(f"{url}/partners/amplitude/cohorts/users", json=bad)
    check(r.status_code == 401 and r.json() == {"message": "Invalid client secret"}, f"bad secret {r.status_code} {r.text}")

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="eddy-exports")
    r = requests.put(f"{url}/eddy/v1/workspaces/default/export-storage", headers=as_admin,
                     json={"type": "s3", "bucket": "eddy-exports", "prefix": "ci", "endpoint": s3_endpoint,
                           "access_key_id": "testing", "secret_access_key": "testing"})
    check(r.status_code == 200, f"export storage {r.status_code} {r.text}")
    segment = {"name": "pro members", "filter": {"and": [
        {"attribute": "amplitude_cohorts", "op": "includes_value", "value": "abcd1234"},
        {"attribute": "plan", "op": "equals", "value": "pro"}]}}
    r = requests.post(f"{url}/eddy/v1/workspaces/default/segments", headers=as_admin, json=segment)
    created = r.json()
    expected = sorted(m for m in members[1:] if int(m.split("-")[1]) % 2)
    check(created["size"] == len(expected), f"segment size {created['size']} != {len(expected)}")

    r = requests.post(f"{url}/users/export/segment", headers=as_key,
                      json={"segment_id": created["id"], "fields_to_export": ["external_id", "custom_attributes", "cohorts"]})
    check(r.status_code == 201, f"export {r.status_code} {r.text}")
    prefix = r.json()["object_prefix"]
    keys = []
    for _ in range(100):
        listing = s3.list_objects_v2(Bucket="eddy-exports", Prefix=f"ci/segment-export/{created['id']}/")
        keys = [o["Key"] for o in listing.get("Contents", [])]
        if keys:
            break
        time.sleep(0.1)
    check(len(keys) == 1 and keys[0].endswith(f"/{prefix}/part-00000.zip"), f"export keys {keys}")
    archive = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket="eddy-exports", Key=keys[0])["Body"].read()))
    check(archive.testzip() is None, "zip CRC")
    lines = archive.read(archive.namelist()[0]).decode().splitlines()
    exported = sorted(json.loads(line)["external_id"] for line in lines)
    check(exported == expected, f"exported users {exported[:5]}…")
    first = json.loads(lines[0])
    check(first["cohorts"] == ["[Amplitude] TEST_COHORT: abcd1234"], f"cohort names {first}")
    print("cohort import + segment export to S3 (moto, boto3, zipfile): all checks passed")


if __name__ == "__main__":
    main()
