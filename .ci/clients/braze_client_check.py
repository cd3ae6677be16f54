"""Drives `eddy serve` with the third-party `braze-client` (PyPI) and checks the profiles.

Usage: python braze_client_check.py BASE_URL REST_KEY
"""

import sys

from braze.client import BrazeClient, BrazeClientError


def check(condition, message):
    if not condition:
        raise SystemExit(f"braze-client check failed: {message}")


def main():
    url, key = sys.argv[1], sys.argv[2]
    client = BrazeClient(api_key=key, api_url=url)

    tracked = client.user_track(
        attributes=[
            {"external_id": "py-1", "first_name": "Ada", "email": "ada@example.com", "plan": "pro", "visits": {"inc": 3}},
            {"external_id": "py-2", "country": "France", "tags": ["a", "b", "a"]},
        ],
        events=[{"external_id": "py-1", "name": "signed_up", "time": "2024-03-01T10:00:00Z", "properties": {"via": "python"}}],
        purchases=[{"external_id": "py-1", "product_id": "book", "currency": "EUR", "price": 12.5, "quantity": 2, "time": "2024-03-02"}],
    )
    check(tracked["status_code"] == 201, f"track status {tracked}")
    check(tracked["success"], f"track not a clean success: {tracked}")
    check(tracked["attributes_processed"] == 2, f"attributes_processed {tracked}")

    # A partial success: one valid object, one without an identifier.
    partial = client.user_track(attributes=[{"external_id": "py-3", "x": 1}, {"first_name": "nobody"}])
    check(partial["status_code"] == 201 and not partial["success"], f"partial {partial}")
    check(partial["errors"][0]["index"] == 1, f"partial error index {partial}")

    # Nothing valid: the client raises Braze's fatal message.
    try:
        client.user_track(attributes=[{"first_name": "nobody"}])
        check(False, "a request with no valid object must fail")
    except BrazeClientError as error:
        check("Valid data must be provided" in str(error), f"fatal message {error}")

    exported = client.user_export(external_ids=["py-1", "py-2", "py-missing"])
    users = {u["external_id"]: u for u in exported["users"]}
    check(users["py-1"]["first_name"] == "Ada", f"first_name {users}")
    check(users["py-1"]["email"] == "ada@example.com", f"email {users}")
    check(users["py-1"]["custom_attributes"] == {"plan": "pro", "visits": 3}, f"custom attributes {users}")
    check(users["py-1"]["custom_events"][0]["name"] == "signed_up", f"events {users}")
    check(users["py-1"]["purchases"][0]["count"] == 2, f"purchases {users}")
    check(users["py-2"]["country"] == "FR", f"country {users}")
    check(users["py-2"]["custom_attributes"]["tags"] == ["a", "b"], f"tags {users}")
    check(exported["invalid_user_ids"] == ["py-missing"], f"invalid ids {exported}")

    by_email = client.user_export(email="ada@example.com", fields_to_export=["external_id", "first_name"])
    check(by_email["users"] == [{"external_id": "py-1", "first_name": "Ada"}], f"export by email {by_email}")

    # The legacy body api_key path.
    legacy = BrazeClient(api_key=key, api_url=url, use_auth_header=False)
    check(legacy.user_track(attributes=[{"external_id": "py-4", "legacy": True}])["status_code"] == 201, "legacy key")

    deleted = client.user_delete(external_ids=["py-2"])
    check(deleted["deleted"] == 1, f"delete {deleted}")
    check(client.user_export(external_ids=["py-2"])["users"] == [], "py-2 still exported after delete")
    print("braze-client (PyPI): all checks passed")


if __name__ == "__main__":
    main()
