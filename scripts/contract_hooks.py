"""Schemathesis hooks of scripts/contract.sh.

Every generated request is a new request: an Idempotency-Key that schemathesis happens to repeat
(its coverage phase sends the same few values to every operation) would be a reuse of the key
for a different job, which the API refuses with 422 as the IETF draft
(draft-ietf-httpapi-idempotency-key-header, section 2.7) asks. That refusal depends on the
store's state, not on the request's shape, so the key is made unique here; repeats with a key
are tested by tests/tests/idempotency.rs. The key keeps its format (1 to 255 visible ASCII
characters).
"""

import uuid

import schemathesis

KEY = "Idempotency-Key"
MAX_KEY_LEN = 255


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    key = headers.get(KEY)
    if isinstance(key, str) and key.strip():
        unique = "." + uuid.uuid4().hex
        headers[KEY] = key.strip()[: MAX_KEY_LEN - len(unique)] + unique
