-- Reference store for calibration: the "plain PL/pgSQL store (stream row lock + insert)" that docs/reference.md §8
-- quotes for scale (about 0.6 x raw on W1, 0.93 x raw on W2). Same tables as sql/bootstrap.sql, but
-- es.append_events is PL/pgSQL. Used by `benches/run.sh --store-sql benches/reference/plpgsql_store.sql`
-- in place of CREATE EXTENSION event_store, to calibrate the machine and to run the suite without the
-- extension. It implements expected_version only (no idempotency, no account rules, no tracing).
CREATE SCHEMA es;
CREATE SEQUENCE es.global_position_seq AS bigint NO CYCLE;
CREATE TABLE es.streams (
    stream_id   uuid        NOT NULL,
    stream_type text,
    version     bigint      NOT NULL CHECK (version >= 0),
    created_at  timestamptz NOT NULL DEFAULT transaction_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT streams_pkey PRIMARY KEY (stream_id)
);
CREATE TABLE es.events (
    global_position bigint      NOT NULL,
    stream_id       uuid        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    event_version   integer     NOT NULL DEFAULT 1 CHECK (event_version >= 1),
    data            jsonb       NOT NULL,
    metadata        jsonb,
    occurred_at     timestamptz NOT NULL DEFAULT transaction_timestamp(),
    recorded_at     timestamptz NOT NULL DEFAULT transaction_timestamp(),
    CONSTRAINT events_pkey PRIMARY KEY (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_global_position_key UNIQUE (global_position)
);

CREATE FUNCTION es.append_events(p_stream_id uuid, p_expected_version bigint, p_events jsonb[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n   int := coalesce(cardinality(p_events), 0);
    cur bigint;
BEGIN
    -- the stream row is the lock that serializes appends to one stream: bump it first
    UPDATE es.streams SET version = version + n, updated_at = transaction_timestamp()
        WHERE stream_id = p_stream_id RETURNING version - n INTO cur;
    IF NOT FOUND THEN
        cur := 0;
        INSERT INTO es.streams (stream_id, version) VALUES (p_stream_id, n);
    END IF;
    IF p_expected_version IS NOT NULL AND p_expected_version >= 0 AND cur <> p_expected_version THEN
        RAISE EXCEPTION 'wrong expected version: expected %, actual %', p_expected_version, cur
            USING ERRCODE = 'ES001';
    END IF;
    INSERT INTO es.events (global_position, stream_id, version, event_id, event_type, event_version,
                           data, metadata, occurred_at)
    SELECT nextval('es.global_position_seq'), p_stream_id, cur + e.i, gen_random_uuid(), e.d->>'type',
           coalesce((e.d->>'event_version')::int, 1), e.d, e.d->'metadata',
           coalesce((e.d->>'occurred_at')::timestamptz, transaction_timestamp())
    FROM unnest(p_events) WITH ORDINALITY AS e(d, i);
    RETURN cur + n;
END
$$;
