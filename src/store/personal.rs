//! Personal data and crypto-shredding (docs/reference.md §14, docs/lifecycle.md "Forgetting a subject"):
//! `es.define_personal_data`, `es.forget`, the subjects' keys (`es.subject_keys`), and what the
//! reads do with sealed values: reveal them for a member of `es_personal_data` whose subject's
//! key still exists, else `null` with the `"_erased"` marker.
//!
//! Sealing itself happens in the append pipeline ([`super::pipeline::Batch::seal_personal_data`])
//! with the [`Sealer`] of this module; the cipher and the token format are the core's
//! ([`event_store_core::personal`]).

use super::sql::AUDIT_INSERT;
use crate::pg::call::i64_datum;
use crate::pg::call::{ResultSet, array_of, bytea_datum, strong_random, text_datum};
use crate::pg::jsonb::Jsonb;
use crate::pg::jsonb::write::jsonb_from_text;
use crate::pg::registry::{self, PersonalPaths};
use crate::pg::security;
use crate::pg::settings;
use crate::pg::spi::{Connection, RegisteredSnapshot, Rows, Stmt};
use event_store_core::EventStoreError;
use event_store_core::personal::{self, KEY_LEN, NONCE_LEN};
use pgrx::pg_sys::BuiltinOid::{BYTEAOID, INT8OID, TEXTARRAYOID, TEXTOID};
use pgrx::pg_sys::{self, BuiltinOid, Datum};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// The role whose members read personal values in clear.
pub const ROLE: &CStr = c"es_personal_data";

/// The personal-data paths of every event type (from the backend's registry cache; it connects
/// only when the cache must be loaded again); `None` when there are none, which a store without
/// personal-data paths learns without a connection or an allocation (the append hot path).
pub fn paths() -> Option<Rc<PersonalPaths>> {
    let paths = registry::cached_personal_paths().unwrap_or_else(|| {
        let conn = Connection::connect();
        registry::personal_paths(&conn)
    });
    (!paths.is_empty()).then_some(paths)
}

/// The keys of the subjects one append seals values for: found in `es.subject_keys`, or made on
/// first use.
pub struct Sealer<'c> {
    conn: &'c Connection,
    keys: HashMap<String, (i64, [u8; KEY_LEN])>,
}

impl<'c> Sealer<'c> {
    /// No key looked up yet.
    pub fn new(conn: &'c Connection) -> Sealer<'c> {
        Sealer {
            conn,
            keys: HashMap::new(),
        }
    }

    /// `plaintext` (a value's JSON text) sealed with `subject`'s key under a fresh nonce.
    pub fn seal(&mut self, subject: &str, plaintext: &str) -> Result<String, EventStoreError> {
        let (key_id, key) = self.key(subject)?;
        let mut nonce = [0u8; NONCE_LEN];
        if !strong_random(&mut nonce) {
            return Err(no_random());
        }
        Ok(personal::seal(&key, key_id, &nonce, plaintext))
    }

    /// The subject's key, made when it has none. Two first appends for one subject at once end
    /// with one key: the second insert waits for the first and does nothing, then reads the
    /// committed row in a snapshot of the latest commits (also under REPEATABLE READ, whose
    /// own snapshot predates it). A `forget` that destroys the key between the two tries again.
    /// With a key provider (`es.key_provider`) the row keeps no key: the provider stores it
    /// (`put`) and gives it back (`get`).
    fn key(&mut self, subject: &str) -> Result<(i64, [u8; KEY_LEN]), EventStoreError> {
        if let Some(k) = self.keys.get(subject) {
            return Ok(*k);
        }
        let provider = settings::key_provider();
        let arg = Some(text_datum(subject));
        for _ in 0..3 {
            if let Some(row) = key_row(&self.conn.execute(&KEY_OF_SUBJECT, &[arg])) {
                return self.resolve(subject, row);
            }
            let mut key = [0u8; KEY_LEN];
            if !strong_random(&mut key) {
                return Err(no_random());
            }
            let kept = provider.is_none().then(|| bytea_datum(&key));
            let made = self.conn.execute(&KEY_INSERT, &[arg, kept]);
            if let Some((key_id, _)) = key_row(&made) {
                if provider.is_some() {
                    call_provider(self.conn, "put", key_id, Some(bytea_datum(&key)));
                }
                return Ok(self.keep(subject, (key_id, key)));
            }
            let latest = RegisteredSnapshot::latest();
            if let Some(row) = key_row(&self.conn.query_in(&KEY_OF_SUBJECT, &[arg], &latest)) {
                return self.resolve(subject, row);
            }
        }
        Err(EventStoreError::KeyUnavailable {
            reason: "it was destroyed by es.forget each time this append made it".into(),
        })
    }

    /// A found row's key: its bytes, or the key provider's.
    fn resolve(
        &mut self,
        subject: &str,
        (key_id, bytes): (i64, Option<Vec<u8>>),
    ) -> Result<(i64, [u8; KEY_LEN]), EventStoreError> {
        let bytes = match bytes {
            Some(b) => b,
            None => {
                provider_get(self.conn, key_id)?.ok_or_else(|| EventStoreError::KeyUnavailable {
                    reason: format!("the key provider has no key {key_id}"),
                })?
            }
        };
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| EventStoreError::KeyUnavailable {
                reason: format!("key {key_id} is not {KEY_LEN} bytes long"),
            })?;
        Ok(self.keep(subject, (key_id, key)))
    }

    fn keep(&mut self, subject: &str, k: (i64, [u8; KEY_LEN])) -> (i64, [u8; KEY_LEN]) {
        self.keys.insert(subject.to_owned(), k);
        k
    }
}

fn no_random() -> EventStoreError {
    EventStoreError::KeyUnavailable {
        reason: "PostgreSQL's strong random source (pg_strong_random) gave no bytes".into(),
    }
}

/// The (key_id, key) of the first row, if any (the key `None`: the key provider keeps it).
fn key_row(rows: &Rows<'_>) -> Option<(i64, Option<Vec<u8>>)> {
    if rows.is_empty() {
        return None;
    }
    let id = rows.first_i64()?;
    let key = rows.bytea(0, 2);
    Some((id, key))
}

/// Calls the key provider (`put` a new key, `forget` one), under its own search path.
fn call_provider(conn: &Connection, action: &str, key_id: i64, key: Option<Datum>) {
    conn.unpinned(|| {
        conn.execute(
            &KEY_PROVIDER_CALL,
            &[Some(text_datum(action)), Some(i64_datum(key_id)), key],
        );
    });
}

/// The key the key provider keeps under `key_id` (`None`: it has none), or why it cannot be
/// asked.
fn provider_get(conn: &Connection, key_id: i64) -> Result<Option<Vec<u8>>, EventStoreError> {
    if settings::key_provider().is_none() {
        return Err(EventStoreError::KeyUnavailable {
            reason: format!(
                "key {key_id} is kept by a key provider, and es.key_provider is not set"
            ),
        });
    }
    // The provider is the DBA's code: it runs under its own search path (es.key_provider_call's
    // SET clause, or its own), not the store's pinned one, which would hide its extensions.
    let rows = conn.unpinned(|| conn.execute(&KEY_PROVIDER_GET, &[Some(i64_datum(key_id))]));
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(rows.bytea(0, 1))
}

/// `es.define_personal_data`: marks the paths of `event_type` (replacing its earlier ones) and
/// records the act in `es.data_audit`. Values stored before keep their form: a newly marked
/// path is sealed from the next append on, an unmarked one stays sealed where it was.
pub fn define(event_type: &str, paths: &[String]) -> Result<(), EventStoreError> {
    personal::parse_paths(event_type, paths)?;
    let conn = Connection::connect();
    let elements: Vec<Option<Datum>> = paths.iter().map(|p| Some(text_datum(p))).collect();
    let array = array_of(
        &elements,
        BuiltinOid::TEXTOID,
        -1,
        false,
        pg_sys::TYPALIGN_INT,
    );
    conn.execute(
        &PERSONAL_DATA_UPSERT,
        &[Some(text_datum(event_type)), Some(array)],
    );
    let detail = serde_json::json!({ "paths": paths }).to_string();
    audit(&conn, "define_personal_data", event_type, &detail);
    Ok(())
}

/// `es.forget`: destroys the subject's key and records the act, in the caller's transaction;
/// true when there was a key. The sealed values stay where they are, unreadable by anyone from
/// the commit on. A later append for the subject makes a new key (what is appended after
/// forgetting is readable; what was forgotten stays so). A key the key provider keeps is
/// destroyed there too (in the provider's own transaction, which a rollback here cannot undo).
pub fn forget(subject: &str) -> Result<bool, EventStoreError> {
    let conn = Connection::connect();
    let rows = conn.execute(&KEY_FORGET, &[Some(text_datum(subject))]);
    let key_id = rows.first_i64();
    let remote = key_id.is_some() && rows.bool(0, 2).unwrap_or(false);
    let provider = settings::key_provider();
    if remote {
        let Some(id) = key_id else { unreachable!() };
        if provider.is_none() {
            return Err(EventStoreError::KeyUnavailable {
                reason: format!(
                    "key {id} is kept by a key provider, and es.key_provider is not set: nothing was destroyed"
                ),
            });
        }
        call_provider(&conn, "forget", id, None);
    }
    // Counting the events the key sealed would read the whole log: the audit names the key.
    let detail = serde_json::json!({
        "key_id": key_id,
        "key_destroyed": key_id.is_some(),
        "key_provider": remote.then_some(provider).flatten(),
    });
    audit(&conn, "forget", subject, &detail.to_string());
    Ok(key_id.is_some())
}

fn audit(conn: &Connection, action: &str, target: &str, detail: &str) {
    conn.execute(
        &AUDIT_INSERT,
        &[
            Some(text_datum(action)),
            Some(text_datum(target)),
            Some(jsonb_from_text(detail)),
        ],
    );
}

/// What a read does with sealed values: reveals them for a member of `es_personal_data`
/// whose subject still has its key, else leaves `null` and the `"_erased"` marker.
pub struct Revealer {
    member: bool,
    /// The keys looked up so far (`None`: destroyed, or never made here).
    keys: HashMap<i64, Option<Vec<u8>>>,
}

impl Revealer {
    /// Whether this backend knows, without asking the catalogs, that personal data was never
    /// defined here: then [`Revealer::load`] is `None`.
    pub fn known_none() -> bool {
        registry::known_no_personal_data()
    }

    /// `None` when personal data was never defined here: the read has nothing to look for.
    pub fn load() -> Option<Revealer> {
        if registry::known_no_personal_data() {
            return None;
        }
        let conn = Connection::connect();
        if !registry::any_personal_data(&conn) {
            return None;
        }
        Some(Revealer {
            member: security::current_user_has_role(ROLE),
            keys: HashMap::new(),
        })
    }

    fn open(&mut self, key_id: i64, token: &str) -> Option<String> {
        if !self.member {
            return None;
        }
        let key = self.keys.entry(key_id).or_insert_with(|| {
            // A read's own connection (the caller may be inside a scan): the key as the caller
            // may read it (members are granted SELECT on es.subject_keys).
            let conn = Connection::connect();
            let rows = conn.query(&KEY_BY_ID, &[Some(i64_datum(key_id))]);
            if rows.is_empty() {
                return None;
            }
            match rows.bytea(0, 1) {
                Some(key) => Some(key),
                // kept by the key provider; not set (or not answering with a key): erased
                None => provider_get(&conn, key_id).ok().flatten(),
            }
        });
        personal::open(key.as_deref()?, token)
    }

    /// A jsonb value with its sealed values revealed or erased: `None` when it holds none
    /// (use it as it is), else the JSON text of the new value.
    pub fn jsonb(&mut self, j: Jsonb<'_>) -> Option<String> {
        let (revealed, _) = personal::reveal_text(&j.to_text(), &mut |id, t| self.open(id, t))?;
        Some(revealed)
    }

    /// A text value that may be a sealed string (a read model's column): `None` when it is
    /// not one, else the revealed text, or `Some(None)` (SQL NULL) when it is erased or sealed
    /// a non-string.
    pub fn text(&mut self, s: &str) -> Option<Option<String>> {
        if !personal::is_token(s) {
            return None;
        }
        let opened = personal::token_key_id(s).and_then(|id| self.open(id, s));
        Some(opened.and_then(|json| serde_json::from_str::<String>(&json).ok()))
    }
}

/// A jsonb result (`es.state`, `es.account_state`, `es.reveal`) as the caller may see it.
pub fn reveal_datum(j: Jsonb<'_>) -> Datum {
    match Revealer::load().and_then(|mut r| r.jsonb(j)) {
        Some(revealed) => jsonb_from_text(&revealed),
        None => j.datum(),
    }
}

/// Makes `out` reveal or erase the sealed values of its rows: the jsonb columns `jsonb` and the
/// text columns `text` (0-based). Nothing when personal data was never defined here.
pub fn reveal_columns(out: &mut ResultSet, jsonb: &'static [usize], text: &'static [usize]) {
    let Some(mut r) = Revealer::load() else {
        return;
    };
    out.set_rewrite(Box::new(move |row| {
        for &c in jsonb {
            if let Some(revealed) = row.jsonb(c).and_then(|j| r.jsonb(j)) {
                row.set_jsonb_text(c, &revealed);
            }
        }
        for &c in text {
            let Some(s) = row.text(c) else {
                continue;
            };
            match r.text(&s) {
                None => {}
                Some(Some(t)) => row.set_text(c, &t),
                Some(None) => row.set_null(c),
            }
        }
        Ok(())
    }));
}

// The statements of this use case, prepared once per backend by `pg::spi`.

/// Define (or replace) an event type's personal-data paths.
pub static PERSONAL_DATA_UPSERT: Stmt = Stmt::new(
    "PersonalDataUpsert",
    c"INSERT INTO es.personal_data (event_type, paths) VALUES ($1, $2)
                  ON CONFLICT (event_type) DO UPDATE
                  SET paths = excluded.paths, defined_by = session_user,
                      defined_at = transaction_timestamp()
                  RETURNING (SELECT p.paths FROM es.personal_data p WHERE p.event_type = $1)",
    &[TEXTOID, TEXTARRAYOID],
);

/// A subject's key: (key_id, key).
pub static KEY_OF_SUBJECT: Stmt = Stmt::new(
    "KeyOfSubject",
    c"SELECT key_id, key FROM es.subject_keys WHERE subject = $1",
    &[TEXTOID],
);

/// Create a subject's key unless a concurrent append did: (key_id, key), no row then.
pub static KEY_INSERT: Stmt = Stmt::new(
    "KeyInsert",
    c"INSERT INTO es.subject_keys (subject, key_id, key)
                  VALUES ($1, nextval('es.subject_key_seq'), $2)
                  ON CONFLICT (subject) DO NOTHING RETURNING key_id, key",
    &[TEXTOID, BYTEAOID],
);

/// A key by its id (what a sealed value names).
pub static KEY_BY_ID: Stmt = Stmt::new(
    "KeyById",
    c"SELECT key FROM es.subject_keys WHERE key_id = $1",
    &[INT8OID],
);

/// Destroy a subject's key: its key_id, no row when it had none.
pub static KEY_FORGET: Stmt = Stmt::new(
    "KeyForget",
    c"DELETE FROM es.subject_keys WHERE subject = $1 RETURNING key_id, key IS NULL",
    &[TEXTOID],
);

/// Call the key provider: (action, key_id, key) -> key.
pub static KEY_PROVIDER_CALL: Stmt = Stmt::new(
    "KeyProviderCall",
    c"SELECT es.key_provider_call($1, $2, $3)",
    &[TEXTOID, INT8OID, BYTEAOID],
);

/// A key from the key provider, as the owner, for a member of es_personal_data.
pub static KEY_PROVIDER_GET: Stmt = Stmt::new(
    "KeyProviderGet",
    c"SELECT es.key_provider_get($1)",
    &[INT8OID],
);
