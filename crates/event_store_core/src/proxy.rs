//! What a client of a PL/Proxy proxy sees of an error raised on a shard (docs/reference.md §11,
//! docs/sharding.md): the store's SQLSTATE, message, DETAIL and HINT as the shard raised them.
//!
//! PL/Proxy decorates a remote error (`es_proxy.append_events(4): [db] REMOTE ERROR: <message>`,
//! `Remote detail: …`, `Remote hint: …`) and reports its own connection failures as
//! `PL/Proxy function …: [db] PQconnectPoll: …` with XX000 or the libpq code. [`undecorate`]
//! takes the decoration off again, and turns a lost or refused shard into 08006/08001 naming the
//! shard; the proxy's relay (the extension's `es_proxy_relay`) and the PL/pgSQL fallback
//! `es_proxy.reraise` of sql/plproxy/setup.sql apply the same rules.

use crate::RaisedError;

/// The hint of a shard whose session ended during the call.
const LOST_HINT: &str = "PL/Proxy reconnects at the next call. Retry: an append with the same event ids is an idempotent retry.";

/// The error a proxy's client gets for `raised`, an error PL/Proxy raised while calling a shard
/// (`shard`: its number, when the call is routed to one). Errors PL/Proxy did not decorate come
/// back unchanged but for their CONTEXT, which the proxy's own frames would repeat.
pub fn undecorate(raised: RaisedError, shard: Option<i32>) -> RaisedError {
    let RaisedError {
        sqlstate,
        message,
        detail,
        hint,
        ..
    } = raised;
    let shard_name = shard.map_or_else(|| "a shard".to_owned(), |s| format!("shard {s}"));
    let (sqlstate, message, detail, hint) = if let Some((db, severity, rest)) = remote(&message) {
        if severity == "FATAL" || severity == "PANIC" || sqlstate.starts_with("57P") {
            // the shard's session ended (terminated, shut down, crashed): passed on as is, 57P01
            // would tell the client that ITS connection to the proxy ended
            (
                "08006".to_owned(),
                format!("{shard_name} (database {db}) lost its connection: {rest}"),
                Some(trim(&message).to_owned()),
                Some(LOST_HINT.to_owned()),
            )
        } else {
            // the store's own error on the shard: its SQLSTATE came through, the texts get back
            // their form
            let rest = rest.to_owned();
            (
                sqlstate,
                rest,
                detail.map(|d| {
                    d.strip_prefix("Remote detail: ")
                        .map_or(d.clone(), str::to_owned)
                }),
                hint.map(|h| {
                    h.strip_prefix("Remote hint: ")
                        .map_or(h.clone(), str::to_owned)
                }),
            )
        }
    } else if let Some((db, kind, rest)) = failure(&message) {
        // PL/Proxy could not reach the shard (libpq's message): 08001 when connecting failed,
        // 08006 when the connection broke during the call (it may or may not have run there)
        let connecting = matches!(
            kind,
            "PQconnectPoll" | "PQconnectStart" | "connect timeout to"
        );
        let state = if connecting { "08001" } else { "08006" };
        let hint = if connecting {
            format!(
                "Only the streams of this shard are affected. Its connection string is option p{} of server es_shards (SELECT * FROM es.shards()).",
                shard.map_or_else(|| "N".to_owned(), |s| s.to_string())
            )
        } else {
            "The outcome of this call on the shard is unknown: retry an append with the same event ids (an idempotent retry returns what the first call returned); PL/Proxy reconnects at the next call.".to_owned()
        };
        (
            state.to_owned(),
            format!(
                "{shard_name} (database {db}) is unavailable: {}",
                trim(rest)
            ),
            Some(trim(&message).to_owned()),
            Some(hint),
        )
    } else {
        (sqlstate, message, detail, hint)
    };
    RaisedError {
        sqlstate,
        message,
        detail: detail.filter(|d| !d.is_empty()),
        hint: hint.filter(|h| !h.is_empty()),
        context: None,
    }
}

/// `s` without leading and trailing spaces and newlines (libpq's messages end with one).
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\n'])
}

/// `<function>(<n>): [<db>] ` at the start of `s`: the database and the rest.
fn function_and_db(s: &str) -> Option<(&str, &str)> {
    let (head, rest) = s.split_once(' ')?;
    let call = head.strip_suffix("):")?;
    let (name, n) = call.rsplit_once('(')?;
    if name.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (db, rest) = rest.strip_prefix('[')?.split_once(']')?;
    Some((db, rest.strip_prefix(' ')?))
}

/// PL/Proxy's remote error `<function>(<n>): [<db>] REMOTE <severity>: <message>`:
/// (db, severity, message).
fn remote(message: &str) -> Option<(&str, &str, &str)> {
    let (db, rest) = function_and_db(message)?;
    let (severity, rest) = rest.strip_prefix("REMOTE ")?.split_once(':')?;
    if severity.is_empty() {
        return None;
    }
    Some((db, severity, rest.strip_prefix(' ')?))
}

/// PL/Proxy's own failure `PL/Proxy function <function>(<n>): [<db>] <kind>[: ]<message>`,
/// kind a libpq call (`PQconnectPoll`, …) or a timeout: (db, kind, message).
fn failure(message: &str) -> Option<(&str, &str, &str)> {
    let (db, rest) = function_and_db(message.strip_prefix("PL/Proxy function ")?)?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("connect timeout to") {
        ("connect timeout to", r)
    } else if let Some(r) = rest.strip_prefix("query timeout") {
        ("query timeout", r)
    } else {
        let letters = rest
            .strip_prefix("PQ")?
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if letters == 0 {
            return None;
        }
        rest.split_at(2 + letters)
    };
    Some((db, kind, rest.strip_prefix(": ").unwrap_or(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(state: &str, message: &str, detail: Option<&str>, hint: Option<&str>) -> RaisedError {
        RaisedError {
            sqlstate: state.into(),
            message: message.into(),
            detail: detail.map(Into::into),
            hint: hint.map(Into::into),
            context: Some("Remote context: SQL statement".into()),
        }
    }

    #[test]
    fn a_store_error_comes_back_as_the_shard_raised_it() {
        let e = undecorate(
            err(
                "ES001",
                "es_proxy.append_events(4): [w_p1] REMOTE ERROR: wrong expected version: x: y",
                Some("Remote detail: expected: 0 (no stream), actual: 2"),
                Some("Remote hint: reload"),
            ),
            Some(1),
        );
        assert_eq!(e.sqlstate, "ES001");
        assert_eq!(e.message, "wrong expected version: x: y");
        assert_eq!(
            e.detail.as_deref(),
            Some("expected: 0 (no stream), actual: 2")
        );
        assert_eq!(e.hint.as_deref(), Some("reload"));
        assert_eq!(e.context, None);
    }

    #[test]
    fn a_multi_line_message_is_kept_whole() {
        let e = undecorate(
            err("P0001", "f(1): [d] REMOTE ERROR: a\nb", None, Some("")),
            None,
        );
        assert_eq!((e.message.as_str(), e.detail, e.hint), ("a\nb", None, None));
    }

    #[test]
    fn a_session_that_ended_is_08006() {
        let m = "es_proxy.append_events(4): [w_p2] REMOTE FATAL: terminating connection due to administrator command\n";
        let e = undecorate(err("57P01", m, None, None), Some(2));
        assert_eq!(e.sqlstate, "08006");
        assert_eq!(
            e.message,
            "shard 2 (database w_p2) lost its connection: terminating connection due to administrator command\n"
        );
        assert_eq!(e.detail.as_deref(), Some(m.trim_end()));
        assert_eq!(e.hint.as_deref(), Some(LOST_HINT));
    }

    #[test]
    fn a_shard_that_refuses_is_08001_naming_it() {
        let m = "PL/Proxy function es_proxy.append_events(4): [w_p2] PQconnectPoll: FATAL:  database \"w_p2\" is not currently accepting connections\n";
        let e = undecorate(err("XX000", m, None, None), Some(2));
        assert_eq!(e.sqlstate, "08001");
        assert_eq!(
            e.message,
            "shard 2 (database w_p2) is unavailable: FATAL:  database \"w_p2\" is not currently accepting connections"
        );
        assert!(e.hint.unwrap().contains("option p2 of server es_shards"));
        let broke = undecorate(
            err(
                "XX000",
                "PL/Proxy function f(1): [d] PQconsumeInput: server closed the connection",
                None,
                None,
            ),
            None,
        );
        assert_eq!(broke.sqlstate, "08006");
        assert!(
            broke
                .message
                .starts_with("a shard (database d) is unavailable: server closed")
        );
        let timeout = undecorate(
            err(
                "XX000",
                "PL/Proxy function f(1): [d] connect timeout to: x",
                None,
                None,
            ),
            Some(0),
        );
        assert_eq!(timeout.sqlstate, "08001");
    }

    #[test]
    fn other_errors_pass_unchanged() {
        for m in [
            "permission denied for function f",
            "f(x): [d] REMOTE ERROR: y",
            "PL/Proxy function f(1): Nested PL/Proxy calls to the same cluster are not supported.",
        ] {
            let e = undecorate(err("42501", m, Some("d"), None), Some(0));
            assert_eq!((e.sqlstate.as_str(), e.message.as_str()), ("42501", m));
            assert_eq!(e.detail.as_deref(), Some("d"));
        }
    }
}
