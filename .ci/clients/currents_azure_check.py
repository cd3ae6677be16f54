"""Currents files on Azure Blob Storage's emulator (Azurite, from npm), listed and downloaded with
Microsoft's azure-storage-blob (PyPI), read by fastavro and checked against the schemas.

Usage: python currents_azure_check.py BASE_URL ADMIN_TOKEN REST_KEY BLOB_ENDPOINT SCHEMA_DIR
BLOB_ENDPOINT is Azurite's account URL, e.g. http://127.0.0.1:10000/devstoreaccount1.
"""

import io
import json
import sys
from pathlib import Path

import fastavro
import requests
from azure.storage.blob import BlobServiceClient

# Azurite's documented development account.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def check(condition, message):
    if not condition:
        raise SystemExit(f"currents azure check failed: {message}")


def main():
    url, admin, key, endpoint, schema_dir = sys.argv[1:6]
    as_admin = {"Authorization": f"Bearer {admin}"}
    service = BlobServiceClient(account_url=endpoint, credential={"account_name": ACCOUNT, "account_key": KEY})
    container = service.create_container("eddy-currents")
    r = requests.post(f"{url}/eddy/v1/workspaces/default/currents", headers=as_admin, json={
        "name": "azure", "type": "azure", "account": ACCOUNT, "access_key": KEY, "container": "eddy-currents",
        "endpoint": endpoint, "prefix": "braze", "event_types": ["users.behaviors.CustomEvent"]})
    check(r.status_code == 201, f"create: {r.status_code} {r.text}")
    integration = r.json()["integration_id"]

    events = [{"external_id": f"az-{i}", "name": "opened", "time": "2024-05-01T12:00:00Z",
               "properties": {"n": i}} for i in range(30)]
    r = requests.post(f"{url}/users/track", headers={"Authorization": f"Bearer {key}"}, json={"events": events})
    check(r.status_code == 201, f"track {r.status_code} {r.text}")
    r = requests.post(f"{url}/eddy/v1/workspaces/default/currents/azure/flush", headers=as_admin)
    check(r.status_code == 200 and r.json()["pending"] == 0, f"flush: {r.text}")
    status = requests.get(f"{url}/eddy/v1/workspaces/default/currents/azure", headers=as_admin).json()
    check(status["type"] == "azure" and status["delivered"] == 30, f"status {status}")

    schema = fastavro.parse_schema(json.loads((Path(schema_dir) / "users.behaviors.CustomEvent.avsc").read_text()))
    seen = set()
    blobs = list(container.list_blobs(name_starts_with="braze/"))
    check(blobs, "no blob written")
    topic = f"dataexport.eddy-01.AzureBlob.integration.{integration}"
    for blob in blobs:
        check(blob.name.startswith(f"braze/{topic}/event_type=users.behaviors.CustomEvent/date="), f"name {blob.name}")
        check(blob.name.rsplit("/", 1)[1].startswith(f"{topic}+") and blob.name.endswith(".avro"), f"name {blob.name}")
        body = container.download_blob(blob.name).readall()
        for record in fastavro.reader(io.BytesIO(body)):
            check(fastavro.validation.validate(record, schema, raise_errors=False), f"record {record}")
            seen.add(record["external_user_id"])
    check(seen == {f"az-{i}" for i in range(30)}, f"users {sorted(seen)}")
    print(f"currents to Azure Blob Storage (Azurite) read by fastavro: {len(blobs)} blob(s), 30 events, all checks passed")


if __name__ == "__main__":
    main()
