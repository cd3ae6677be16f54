"""eddy sync reading the Currents files eddy wrote to a real S3 server (moto), as Amperity reads
Braze's Currents: an Avro source on the bucket, sent back into eddy as a custom attribute.

Usage: python sync_from_currents_check.py EDDY_BINARY BASE_URL REST_KEY S3_ENDPOINT WORK_DIR
Runs after currents_check.py, which left two connectors' files under `plain/` and `packed/`.
"""

import json
import subprocess
import sys
from pathlib import Path

import requests


def check(condition, message):
    if not condition:
        raise SystemExit(f"sync from currents check failed: {message}")


def main():
    eddy, url, key, endpoint, work = sys.argv[1:6]
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "sync.toml").write_text(f"""
[[sync]]
name = "currents"
identifier = {{ type = "external_id", column = "external_user_id" }}
source = {{ type = "avro", bucket = "eddy-currents", prefix = "packed", endpoint = "{endpoint}",
           access_key_id = "testing", secret_access_key = "testing" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}", update_existing_only = true }}
[sync.attributes]
last_currents_event = {{ type = "string", column = "name" }}
""")
    out = subprocess.run([eddy, "sync", "run", "--json", "--config", str(work / "sync.toml")],
                         capture_output=True, text=True)
    check(out.stdout.strip(), f"no report: {out.stderr}")
    report = json.loads(out.stdout)
    # The exit code tells schedulers whether every row went: 0 when the run succeeded, 2 when
    # some rows failed (they are retried next run).
    expected_code = 0 if report["status"] == "succeeded" else 2
    check(report["status"] in ("succeeded", "partial"), f"status {report}")
    check(out.returncode == expected_code, f"exit code {out.returncode} for {report['status']}")
    # 46 records over six event types; cur-1 and cur-2 appear in several (refused as duplicates).
    check(report["rows_read"] == 46, f"rows read {report}")
    # Each row ends in one place: sent (confirmed by eddy), unchanged, or failed.
    check(report["sent"] + report["unchanged"] + report["failed"] == 46, f"rows accounted {report}")
    check(report["sent"] <= report["added"] + report["changed"], f"sent {report}")
    check(report["failed"] <= 6, f"only the repeated identifiers fail: {report}")
    r = requests.post(f"{url}/users/export/ids", headers={"Authorization": f"Bearer {key}"},
                      json={"external_ids": ["cur-7"], "fields_to_export": ["external_id", "custom_attributes"]})
    user = r.json()["users"][0]
    check(user["custom_attributes"].get("last_currents_event") == "played", f"user {user}")
    second = subprocess.run([eddy, "sync", "run", "--json", "--config", str(work / "sync.toml")],
                            capture_output=True, text=True)
    again = json.loads(second.stdout)
    check(second.returncode == (0 if again["status"] == "succeeded" else 2),
          f"second run's exit code {second.returncode} for {again['status']}")
    # Nothing new to send: the run's one request is its credentials check.
    check(again["sent"] == 0 and again["requests"] == 1, f"second run {again}")
    print(f"eddy sync from Currents files on S3 (moto): {report['rows_read']} records read, "
          f"{report['sent']} sent, then nothing: all checks passed")


if __name__ == "__main__":
    main()
