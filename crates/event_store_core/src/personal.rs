//! Personal data and crypto-shredding (docs/reference.md §14, docs/lifecycle.md "Forgetting a subject"): which paths of
//! an event type hold personal data, how a value at such a path is sealed with its subject's key
//! before it is stored, and how a read reveals it again or marks it erased.
//!
//! A sealed value is a JSON *string*, a token `es:enc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖
//! tag>` (AES-256-GCM from RustCrypto's `aes-gcm`, a 96-bit nonce per value, the token's prefix
//! and key id as associated data, so a token cannot be moved to another key unnoticed). Why a
//! string and not an envelope object: every fold that copies a personal string into its state
//! (the account's `holder_name` from `Opened.account_holder`, a user's `evolve`) copies the token
//! unchanged, so states, snapshots and read models hold the sealed form without knowing about
//! it, and the account's rule "the holder is a string" still holds. The plaintext is the value's
//! JSON text, so a number or an object comes back as what it was.
//!
//! The token names the key by its id, never by its subject: a subject may itself be personal (an
//! e-mail address named in the metadata) and must not be copied next to every value.
//!
//! Nothing here draws random bytes or touches a key table: the caller passes the key and the
//! nonce (the extension takes them from PostgreSQL's `pg_strong_random`), so every function is
//! deterministic and tested on its own.

use crate::EventStoreError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

/// The start of every sealed value.
pub const TOKEN_PREFIX: &str = "es:enc:v1:";
/// Bytes of a subject key (AES-256).
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce (GCM's 96 bits).
pub const NONCE_LEN: usize = 12;
/// The metadata key that names an event's subject (default: the stream id).
pub const SUBJECT_KEY: &str = "data_subject";
/// The key a read adds to an object whose personal values it could not reveal: the paths of
/// those values.
pub const ERASED_KEY: &str = "_erased";

/// Top-level keys the store itself reads or writes in an event object: never personal paths.
const RESERVED: [&str; 8] = [
    "type",
    "event_id",
    "event_version",
    "occurred_at",
    "metadata",
    "sequence_number",
    "aggregate_id",
    ERASED_KEY,
];

/// A marked path: the object keys from the event object's top, outermost first.
pub type Path = Vec<String>;

/// The free-text field of each seed account event: the only path such an event may mark (its
/// amounts are what the account's rules and fold compute with, and they only copy text).
fn seed_text_field(event_type: &str) -> Option<&'static str> {
    match event_type {
        "Opened" => Some("account_holder"),
        "Deposited" | "Withdrawn" => Some("description"),
        "Frozen" | "Closed" => Some("reason"),
        _ => None,
    }
}

/// Whether only string values are sealed at `event_type`'s paths: the seed's account events,
/// whose rules refuse a holder, description or reason that is not a string; sealing another
/// value would turn it into a string (a token) that the rules would then accept.
pub fn seals_only_strings(event_type: &str) -> bool {
    seed_text_field(event_type).is_some()
}

/// Checks the arguments of `es.define_personal_data`: a non-empty event type and dot-separated
/// paths of object keys (`customer.email`), none of the store's own keys, none twice or inside
/// another; for the seed's account events only their free-text field. An empty list is allowed
/// (the type keeps no personal paths from then on; what was sealed stays sealed).
pub fn parse_paths(event_type: &str, paths: &[String]) -> Result<Vec<Path>, EventStoreError> {
    if event_type.trim().is_empty() {
        return Err(EventStoreError::InvalidArgument {
            name: "event_type",
            reason: "the event type is empty".into(),
        });
    }
    let bad = |path: &str, why: &str| EventStoreError::InvalidArgument {
        name: "paths",
        reason: format!("path \"{path}\" {why}"),
    };
    let mut parsed: Vec<Path> = Vec::with_capacity(paths.len());
    for text in paths {
        let path: Path = text.split('.').map(str::to_owned).collect();
        if text.contains('\n') {
            return Err(bad(text, "holds a line break"));
        }
        if path.iter().any(String::is_empty) {
            return Err(bad(
                text,
                "has an empty key (paths are object keys joined by dots, like customer.email)",
            ));
        }
        if RESERVED.contains(&path[0].as_str()) {
            return Err(bad(
                text,
                "is a key the store reads itself (type, event_id, event_version, occurred_at, metadata, sequence_number, aggregate_id, _erased)",
            ));
        }
        if let Some(field) = seed_text_field(event_type)
            && (path.len() != 1 || path[0] != field)
        {
            return Err(bad(
                text,
                &format!(
                    "is not the free-text field of the account event {event_type}: only \"{field}\" may be personal (the account's rules compute with the others)"
                ),
            ));
        }
        if let Some(other) = parsed
            .iter()
            .find(|p| p.starts_with(&path) || path.starts_with(p))
        {
            return Err(bad(
                text,
                &format!("repeats or overlaps the path \"{}\"", other.join(".")),
            ));
        }
        parsed.push(path);
    }
    Ok(parsed)
}

/// Whether `s` is a sealed value (by its prefix; whether it opens is another matter).
pub fn is_token(s: &str) -> bool {
    s.starts_with(TOKEN_PREFIX)
}

/// The key id a token names, and the token (`None`: not a well-formed token).
pub fn token_key_id(token: &str) -> Option<i64> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, _) = rest.split_once(':')?;
    id.parse().ok()
}

/// The associated data of a token: its prefix and key id.
fn aad(key_id: i64) -> String {
    format!("{TOKEN_PREFIX}{key_id}")
}

/// Seals `plaintext` (a value's JSON text, as PostgreSQL prints it: numbers keep their exact
/// digits) with `key` under `nonce`, which must never be used twice with the same key (the
/// caller draws it at random for every value).
pub fn seal(key: &[u8; KEY_LEN], key_id: i64, nonce: &[u8; NONCE_LEN], plaintext: &str) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let aad = aad(key_id);
    // Encryption with a 32-byte key and a 12-byte nonce fails only past GCM's length limit
    // (64 GiB), far beyond a jsonb value (1 GB): an empty ciphertext would only fail to open.
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(&sealed);
    format!("{}:{}", aad, BASE64.encode(bytes))
}

/// Opens a token with `key`: the JSON text it sealed, or `None` when the key is not its key,
/// the token was altered, or it is not a token.
pub fn open(key: &[u8], token: &str) -> Option<String> {
    let key_id = token_key_id(token)?;
    let (_, b64) = token.strip_prefix(TOKEN_PREFIX)?.split_once(':')?;
    let bytes = BASE64.decode(b64).ok()?;
    if key.len() != KEY_LEN || bytes.len() < NONCE_LEN {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let aad = aad(key_id);
    let plaintext = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .ok()?;
    let text = String::from_utf8(plaintext).ok()?;
    // Only JSON goes back into a document (a token sealed by someone else with our key would
    // have to be valid JSON text too).
    serde_json::from_str::<serde::de::IgnoredAny>(&text).ok()?;
    Some(text)
}

/// The JSON text of a string, for sealing a command's text field.
pub fn string_json(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Reveals the sealed values of a JSON document given as text, without parsing and printing
/// the rest (its numbers keep their exact digits): every string value that is a token is
/// replaced by the JSON text `open(key id, token)` gives, or by `null`. `None` when the text
/// holds no token (nothing to do). Else the new text and the paths of the values left `null`
/// (object keys and array indexes joined by dots, document order); an object with such values
/// gets the `"_erased"` marker listing them.
pub fn reveal_text(
    json: &str,
    open: &mut dyn FnMut(i64, &str) -> Option<String>,
) -> Option<(String, Vec<String>)> {
    let needle = format!("\"{TOKEN_PREFIX}");
    if !json.contains(&needle) {
        return None;
    }
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut erased_tokens: Vec<&str> = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    let mut any = false;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        // A string from i to its closing quote (escapes skipped).
        let start = i;
        let mut j = i + 1;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        let end = j.min(bytes.len() - 1);
        let content = &json[start + 1..end];
        i = end + 1;
        // An object key is followed by a colon: never replaced.
        let is_key = json[i..].trim_start().starts_with(':');
        if is_key || !is_token(content) || content.contains('\\') {
            continue;
        }
        any = true;
        out.push_str(&json[copied..start]);
        match token_key_id(content).and_then(|id| open(id, content)) {
            Some(text) => out.push_str(&text),
            None => {
                out.push_str("null");
                erased_tokens.push(content);
            }
        }
        copied = i;
    }
    if !any {
        return None;
    }
    out.push_str(&json[copied..]);
    let mut erased = Vec::new();
    if !erased_tokens.is_empty()
        && let Ok(value) = serde_json::from_str::<Value>(json)
    {
        token_paths(&value, &mut Vec::new(), &erased_tokens, &mut erased);
    }
    if !erased.is_empty() && out.trim_start().starts_with('{') {
        let marker = Value::Array(erased.iter().cloned().map(Value::String).collect());
        if let Some(close) = out.rfind('}') {
            out.insert_str(close, &format!(", \"{ERASED_KEY}\": {marker}"));
        }
    }
    Some((out, erased))
}

/// The paths of the strings of `value` that are among `tokens`.
fn token_paths(value: &Value, path: &mut Vec<String>, tokens: &[&str], found: &mut Vec<String>) {
    match value {
        Value::String(s) if tokens.contains(&s.as_str()) => found.push(path.join(".")),
        Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                token_paths(v, path, tokens, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                token_paths(v, path, tokens, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The subject an event's values are sealed for: its metadata's `data_subject` when that is a
/// non-empty string, else the stream.
pub fn subject_of(data_subject: Option<&str>, stream: &str) -> String {
    match data_subject {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => stream.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
    const NONCE: [u8; NONCE_LEN] = [1; NONCE_LEN];

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_only() {
        for value in ["\"Alice\"", "42", "1.10", "{\"a\": [1, \"b\"]}", "true"] {
            let token = seal(&KEY, 5, &NONCE, value);
            assert!(token.starts_with("es:enc:v1:5:"), "{token}");
            assert!(!token.contains("Alice"));
            assert_eq!(open(&KEY, &token).as_deref(), Some(value));
            assert_eq!(open(&[8; KEY_LEN], &token), None);
            assert_eq!(token_key_id(&token), Some(5));
        }
    }

    #[test]
    fn a_token_moved_to_another_key_id_or_altered_does_not_open() {
        let token = seal(&KEY, 5, &NONCE, "\"Alice\"");
        let moved = token.replacen("es:enc:v1:5:", "es:enc:v1:6:", 1);
        assert_eq!(open(&KEY, &moved), None);
        let mut altered = token.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(open(&KEY, &altered), None);
        assert_eq!(open(&KEY, "es:enc:v1:5:not base64!"), None);
        assert_eq!(open(&KEY, "es:enc:v1:x:AAAA"), None);
        assert_eq!(open(&KEY[..16], &token), None);
        // sealed text that is not JSON never goes back into a document
        assert_eq!(open(&KEY, &seal(&KEY, 5, &NONCE, "not json")), None);
    }

    #[test]
    fn two_seals_of_one_value_differ_with_their_nonces() {
        let a = seal(&KEY, 1, &[1; NONCE_LEN], "\"Alice\"");
        let b = seal(&KEY, 1, &[2; NONCE_LEN], "\"Alice\"");
        assert_ne!(a, b);
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            parse_paths("Registered", &paths(&["email", "address.city"])).unwrap(),
            vec![
                vec!["email".to_owned()],
                vec!["address".into(), "city".into()]
            ]
        );
        assert!(parse_paths("Registered", &[]).unwrap().is_empty());
        let reason = |t: &str, p: &[&str]| match parse_paths(t, &paths(p)) {
            Err(EventStoreError::InvalidArgument { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(reason(" ", &["a"]).contains("event type is empty"));
        assert!(reason("R", &[""]).contains("empty key"));
        assert!(reason("R", &["a..b"]).contains("empty key"));
        assert!(reason("R", &["metadata.user"]).contains("reads itself"));
        assert!(reason("R", &["type"]).contains("reads itself"));
        assert!(reason("R", &["a", "a"]).contains("repeats or overlaps the path \"a\""));
        assert!(reason("R", &["a.b", "a"]).contains("overlaps the path \"a.b\""));
        assert!(reason("R", &["a\nb"]).contains("line break"));
        assert!(reason("Opened", &["initial_balance_cents"]).contains("account_holder"));
        assert!(parse_paths("Opened", &paths(&["account_holder"])).is_ok());
        assert!(parse_paths("Withdrawn", &paths(&["description"])).is_ok());
        assert!(parse_paths("Closed", &paths(&["reason"])).is_ok());
        assert!(seals_only_strings("Opened") && !seals_only_strings("Registered"));
    }

    #[test]
    fn reveal_opens_what_it_can_marks_the_rest_and_keeps_every_digit() {
        let kept = seal(&KEY, 1, &NONCE, "\"Alice\"");
        let lost = seal(&KEY, 2, &NONCE, "{\"city\": \"Oslo\"}");
        let json = format!(
            "{{\"n\": 12345678901234567890.10, \"name\": \"{kept}\", \"items\": [1, {{\"addr\": \"{lost}\"}}], \"{kept}\": 1, \"q\": \"x\\\"{kept}\"}}"
        );
        let (text, erased) = reveal_text(&json, &mut |id, token| {
            (id == 1).then(|| open(&KEY, token)).flatten()
        })
        .unwrap();
        assert_eq!(erased, vec!["items.1.addr".to_owned()]);
        assert_eq!(
            text,
            format!(
                "{{\"n\": 12345678901234567890.10, \"name\": \"Alice\", \"items\": [1, {{\"addr\": null}}], \"{kept}\": 1, \"q\": \"x\\\"{kept}\", \"_erased\": [\"items.1.addr\"]}}"
            )
        );
        assert_eq!(reveal_text("{\"a\": \"es:enc\"}", &mut |_, _| None), None);
        let scalar = format!("\"{lost}\"");
        assert_eq!(
            reveal_text(&scalar, &mut |_, _| None),
            Some(("null".to_owned(), vec![String::new()]))
        );
    }

    #[test]
    fn the_subject_is_the_metadata_s_or_the_stream() {
        assert_eq!(subject_of(Some("customer-7"), "s"), "customer-7");
        assert_eq!(subject_of(Some(""), "s"), "s");
        assert_eq!(subject_of(None, "s"), "s");
        assert_eq!(string_json("A \"b\""), "\"A \\\"b\\\"\"");
    }
}
