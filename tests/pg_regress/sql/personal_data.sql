-- Personal data and crypto-shredding (docs/reference.md §14, docs/lifecycle.md "Forgetting a subject"): paths marked by
-- es.define_personal_data are sealed at append with their subject's key; reads reveal them to
-- members of es_personal_data, null and "_erased" to others; es.forget destroys the key.
-- In a database of its own, so the keys and positions of this file touch no other file.
\pset null '(null)'
CREATE DATABASE es_regress_personal;
\c es_regress_personal
CREATE EXTENSION event_store;
\ir ../error_of.sql
-- sealed values are random: shown as <sealed key N>
CREATE FUNCTION masked(j anyelement) RETURNS text LANGUAGE sql AS $$
  SELECT regexp_replace(j::text, 'es:enc:v1:([0-9]+):[A-Za-z0-9+/=]+', '<sealed key \1>', 'g') $$;
-- the role exists (made by CREATE EXTENSION if the cluster had none) and cannot log in
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'es_personal_data';
-- bad definitions
SELECT error_of($$SELECT es.define_personal_data('', ARRAY['a'])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', NULL)$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['a', NULL])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY[''])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['address..city'])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['metadata.user'])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['type'])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['email', 'email'])$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['address', 'address.city'])$$);
SELECT error_of($$SELECT es.define_personal_data('Opened', ARRAY['initial_balance_cents'])$$);
SELECT error_of($$SELECT es.define_personal_data('Deposited', ARRAY['amount_cents'])$$);
SELECT count(*) AS nothing_defined FROM es.personal_data;
-- the account's holder, a withdrawal's description, and a custom type with a nested path
SELECT es.define_personal_data('Opened', ARRAY['account_holder']);
SELECT es.define_personal_data('Withdrawn', ARRAY['description']);
SELECT es.define_personal_data('Registered', ARRAY['email', 'address.city', 'birth_year', 'nickname']);
SELECT event_type, paths FROM es.personal_data ORDER BY event_type;
SET es.snapshot_interval = 2;
SELECT es.append_events('e1000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Opened","event_id":"e1000000-0000-0000-0000-0000000000a1","account_holder":"Alice Smith","initial_balance_cents":100}',
  '{"type":"Deposited","event_id":"e1000000-0000-0000-0000-0000000000a2","amount_cents":50,"description":"salary"}']::jsonb[]) AS v;
SELECT es.withdraw('e1000000-0000-0000-0000-000000000001', 30, 'rent to Bob Jones') AS v;
RESET es.snapshot_interval;
-- the cleartext validated first: an account event whose holder is not a string is refused
SELECT error_of($$SELECT es.append_events('e1000000-0000-0000-0000-000000000009', 0, ARRAY['{"type":"Opened","account_holder":7,"initial_balance_cents":0}']::jsonb[])$$);
-- stored: the table, the kept state and the snapshot hold the sealed form only
SELECT version, event_type, masked(data - 'event_id' - 'occurred_at') AS data FROM es.events
 WHERE stream_id = 'e1000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT masked(state) AS kept_state FROM es.streams WHERE stream_id = 'e1000000-0000-0000-0000-000000000001';
SELECT version, masked(state) AS snapshot FROM es.snapshots WHERE stream_id = 'e1000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT subject, key_id, length(key) AS key_bytes FROM es.subject_keys ORDER BY key_id;
-- a custom event: the subject named in the metadata, a nested path, a number, a missing path, a null
SELECT es.append_events('e2000000-0000-0000-0000-000000000001', 0, ARRAY[
  '{"type":"Registered","event_id":"e2000000-0000-0000-0000-0000000000b1","email":"alice@example.org","address":{"city":"Oslo","country":"NO"},"birth_year":1990,"nickname":null,"plan":"gold","metadata":{"data_subject":"customer-7"}}']::jsonb[]) AS v;
SELECT masked(data - 'event_id' - 'occurred_at') AS stored FROM es.events WHERE stream_id = 'e2000000-0000-0000-0000-000000000001';
SELECT subject, key_id FROM es.subject_keys ORDER BY key_id;
-- reads as the owner (a superuser holds every role): in clear
SELECT version, data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e2000000-0000-0000-0000-000000000001');
SELECT es.account_state('e1000000-0000-0000-0000-000000000001') AS state;
SELECT es.account_state('e1000000-0000-0000-0000-000000000001', at_version => 2) AS from_snapshot;
SELECT es.state('e1000000-0000-0000-0000-000000000001') AS state;
SELECT version, event_type, amount_cents, balance_cents, description FROM es.account_history('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT version, data->>'account_holder' AS holder, state->>'holder_name' AS state_holder FROM es.history('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT global_position > 0 AS positioned, data->>'email' AS email FROM es.read_all(0, 100) WHERE event_type = 'Registered';
-- a reader that is not a member: null and the "_erased" marker; amounts, types and times stay
CREATE ROLE regress_pd_reader;
CREATE ROLE regress_pd_member IN ROLE es_personal_data;
GRANT USAGE ON SCHEMA es TO regress_pd_reader, regress_pd_member;
GRANT SELECT ON es.events, es.streams, es.snapshots TO regress_pd_reader, regress_pd_member;
SET ROLE regress_pd_reader;
SELECT version, data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e2000000-0000-0000-0000-000000000001');
SELECT es.account_state('e1000000-0000-0000-0000-000000000001') AS state;
SELECT version, event_type, amount_cents, balance_cents, description FROM es.account_history('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT es.reveal((SELECT state FROM es.streams WHERE stream_id = 'e1000000-0000-0000-0000-000000000001')) AS revealed;
SELECT error_of($$SELECT key FROM es.subject_keys$$);
SELECT error_of($$SELECT es.forget('customer-7')$$);
SELECT error_of($$SELECT es.define_personal_data('Registered', ARRAY['email'])$$);
SELECT error_of($$SET es.key_provider = 'public.mine'$$);
SELECT error_of($$SELECT es.key_provider_get(1)$$);
RESET ROLE;
-- a member: in clear (es.reveal too, for a read model or a row read directly)
SET ROLE regress_pd_member;
SELECT data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e2000000-0000-0000-0000-000000000001');
SELECT es.account_state('e1000000-0000-0000-0000-000000000001') AS state;
SELECT es.reveal((SELECT state FROM es.streams WHERE stream_id = 'e1000000-0000-0000-0000-000000000001')) AS revealed;
SELECT es.reveal('{"plain": 1.10, "n": [1, 2]}') AS unchanged;
RESET ROLE;
-- a client saves the state it read (the holder revealed): the snapshot keeps it sealed; another
-- holder is refused as before
SELECT es.save_snapshot('e1000000-0000-0000-0000-000000000001', 3, es.account_state('e1000000-0000-0000-0000-000000000001', at_version => 3));
SELECT version, masked(state) AS snapshot FROM es.snapshots WHERE stream_id = 'e1000000-0000-0000-0000-000000000001' ORDER BY version;
SELECT error_of($$SELECT es.save_snapshot('e1000000-0000-0000-0000-000000000001', 3, '{"holder_name": "Mallory", "balance_cents": 120, "status": "Active", "version": 3}')$$) ~ '^ES005' AS refused;
-- forgetting: the key is destroyed in the caller's transaction, with its audit row
BEGIN;
SELECT es.forget('e1000000-0000-0000-0000-000000000001') AS destroyed;
ROLLBACK;
SELECT count(*) AS key_still_there FROM es.subject_keys WHERE subject = 'e1000000-0000-0000-0000-000000000001';
SELECT es.forget('e1000000-0000-0000-0000-000000000001') AS destroyed;
SELECT es.forget('e1000000-0000-0000-0000-000000000001') AS again;
SELECT es.forget('nobody') AS never_had_one;
SELECT subject, key_id FROM es.subject_keys ORDER BY key_id;
-- afterwards nobody reads the holder, the owner included; the balance history survives
SELECT version, data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT es.account_state('e1000000-0000-0000-0000-000000000001') AS state;
SELECT es.account_state('e1000000-0000-0000-0000-000000000001', at_version => 2) AS from_snapshot;
SELECT version, event_type, amount_cents, balance_cents, status, description FROM es.account_history('e1000000-0000-0000-0000-000000000001') ORDER BY version;
SELECT version, data->>'account_holder' AS holder, state FROM es.history('e1000000-0000-0000-0000-000000000001') ORDER BY version;
-- the other subject is untouched
SELECT data->>'email' AS email FROM es.load_events('e2000000-0000-0000-0000-000000000001');
-- the account goes on; a later description of the subject gets a new key and is readable
SELECT es.withdraw('e1000000-0000-0000-0000-000000000001', 10, 'after forgetting') AS v;
SELECT version, data->>'description' AS description, data->'_erased' AS erased FROM es.load_events('e1000000-0000-0000-0000-000000000001', 2) ORDER BY version;
SELECT subject, key_id FROM es.subject_keys ORDER BY key_id;
-- the forgotten customer by its data_subject
SELECT es.forget('customer-7') AS destroyed;
SELECT data - 'event_id' - 'occurred_at' AS data FROM es.load_events('e2000000-0000-0000-0000-000000000001');
-- unmarking a type: later appends are stored as sent, what was sealed stays sealed
SELECT es.define_personal_data('Registered', ARRAY[]::text[]);
SELECT es.append_events('e2000000-0000-0000-0000-000000000001', 1, ARRAY['{"type":"Registered","event_id":"e2000000-0000-0000-0000-0000000000b2","email":"plain@example.org"}']::jsonb[]) AS v;
SELECT version, masked(data - 'event_id' - 'occurred_at') AS stored FROM es.events WHERE stream_id = 'e2000000-0000-0000-0000-000000000001' ORDER BY version;
-- a value that already is a sealed token is kept as it is (a copy of one is not sealed twice)
SELECT es.append_events('e3000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"Withdrawn","event_id":"e3000000-0000-0000-0000-0000000000c1","amount_cents":1,"description":"es:enc:v1:999:AAAA"}']::jsonb[]) AS v;
SELECT data->>'description' AS kept FROM es.events WHERE stream_id = 'e3000000-0000-0000-0000-000000000001';
SELECT data->'description' AS description, data->'_erased' AS erased FROM es.load_events('e3000000-0000-0000-0000-000000000001');
-- a key provider (docs/lifecycle.md "Keys in another database") that does not exist: the append that
-- would make a key fails whole; a subject whose key is here needs no provider
SET es.key_provider = 'public.no_such_provider';
SELECT error_of($$SELECT es.append_events('e4000000-0000-0000-0000-000000000001', 0, ARRAY['{"type":"Opened","account_holder":"Nobody","initial_balance_cents":0}']::jsonb[])$$);
SELECT count(*) AS nothing_stored FROM es.streams WHERE stream_id = 'e4000000-0000-0000-0000-000000000001';
SELECT es.withdraw('e1000000-0000-0000-0000-000000000001', 1, 'with the key here') AS v;
RESET es.key_provider;
-- every act is in es.data_audit
SELECT id, action, target, detail, performed_by = session_user AS by_me FROM es.data_audit ORDER BY id;
-- nothing here holds the cleartext any more
SELECT count(*) AS cleartext_rows FROM (
  SELECT data::text AS t FROM es.events UNION ALL SELECT state::text FROM es.streams
  UNION ALL SELECT state::text FROM es.snapshots) x
 WHERE t LIKE '%Alice Smith%' OR t LIKE '%Bob Jones%' OR t LIKE '%alice@example%' OR t LIKE '%Oslo%';
\c event_store_regress
DROP DATABASE es_regress_personal;
DROP ROLE regress_pd_reader;
DROP ROLE regress_pd_member;
