"""Schemathesis hooks of scripts/conformance.sh: long-polls do not wait.

`wait=` holds a request up to 60 s by design (docs/api.md); the check is
about what the master answers, not how long it waits, so it asks for 0.
"""
import schemathesis


@schemathesis.hook
def map_query(context, query):
    if isinstance(query, dict) and "wait" in query:
        query["wait"] = 0
    return query


@schemathesis.serializer("application/offset+octet-stream")
def upload_bytes(ctx, value):
    """`PATCH /v1/uploads/{id}` takes raw bytes (docs/api.md)."""
    from schemathesis.transport.serialization import serialize_binary

    return {"data": serialize_binary(value)}
