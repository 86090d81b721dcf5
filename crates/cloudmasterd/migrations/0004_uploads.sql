-- Uploads (issue 9 point 3): image files on their way in, sent by a client
-- (PATCH at an offset) or fetched by the master from an https URL. The bytes
-- live in DATA/uploads/ID; the offset is that file's length. A row goes when
-- an image is made of it (same transaction as the image), when it expires,
-- or when it is deleted.
CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('receiving', 'fetching', 'complete', 'failed')),
    -- declared by the client, or the length a URL's server announced
    size        INTEGER,
    -- declared (checked when the last byte is in), or computed for a URL
    sha256      TEXT,
    url         TEXT,
    -- why it failed: the API error document's body, as JSON
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
