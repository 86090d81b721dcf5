-- Idempotency keys (issue 9 point 5; crate::idempotency, docs/api.md): the
-- first answer to a request made with an `Idempotency-Key`, per principal,
-- replayed to its retries until it expires. Instance creates and actions
-- write their row in the transaction of the change itself, so a crash between
-- the commit and the answer cannot make a retry run the change twice.
CREATE TABLE idempotency_keys (
    principal   TEXT NOT NULL,
    key         TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    status      INTEGER NOT NULL,
    response    BLOB NOT NULL,
    -- the answer held a secret shown once (a record's, a token): only the
    -- fact that the request was made is kept, never the answer
    withheld    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (principal, key)
);

CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
