//! The store's `ProcessUtility_hook`: database-level commands work as they do without the
//! extension.
//!
//! `DROP DATABASE`, `ALTER DATABASE … RENAME TO`, `ALTER DATABASE … SET TABLESPACE` and `CREATE
//! DATABASE … TEMPLATE` refuse to run while another session is connected to the database they act
//! on ("database … is being accessed by other users"), and the store's database worker is such a
//! session. Before the command runs, the hook takes hold of that database (the launcher starts no
//! worker for it), asks its worker to leave and waits for it; when the transaction ends, committed
//! or not, the hold ends: the worker comes back where the database still exists and has work, and
//! a database created from a template is looked at at once. This is how TimescaleDB's loader
//! stops its per-database scheduler before a `DROP DATABASE`.
//!
//! `DROP EXTENSION event_store` and `ALTER EXTENSION event_store UPDATE` get the same treatment
//! for the current database: they take exclusive locks on the store's tables one after another
//! while the worker, in the middle of a projection's batch, holds a share lock on one and waits
//! for another, and PostgreSQL's deadlock detector then cancels the command ("deadlock
//! detected"). Holding the database first makes the worker leave (its batch in progress, if any,
//! rolls back).
//!
//! Every utility statement passes through the hook, so the hook must not change how they fail:
//! it calls the next hook without pgrx's guard (see `standard_process_utility_unguarded`).
//!
//! Installed only with the preloaded library (the workers exist only then).

use super::worker_registry;
use pgrx::pg_sys;
use std::ffi::{CStr, c_char};
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

/// How long the hook waits for a worker to leave (it finishes its round first). PostgreSQL's
/// own check then waits up to 5 seconds more for sessions that are on their way out.
const WORKER_EXIT_WAIT: Duration = Duration::from_secs(10);

/// The hook installed before ours, called in its place.
static PREV: OnceLock<pg_sys::ProcessUtility_hook_type> = OnceLock::new();

/// Installs the hook. Call once, from `_PG_init` under `shared_preload_libraries`.
pub fn install() {
    // SAFETY: _PG_init runs once per process before any query, so reading and replacing the
    // hook variable cannot race; the previous hook is kept and called by ours.
    unsafe {
        let _ = PREV.set(pg_sys::ProcessUtility_hook);
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// What a database-level command does to the database it needs alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// `DROP DATABASE`: gone after a success.
    Drop,
    /// `ALTER DATABASE … RENAME` / `SET TABLESPACE`: the same database (OID) after it.
    Alter,
    /// `CREATE DATABASE … TEMPLATE`: the template stays, and a new database appears.
    CopyFrom,
    /// `DROP EXTENSION event_store` / `ALTER EXTENSION event_store …` in the current database:
    /// its worker must be out of the way of the store's tables, nothing else.
    Extension,
}

/// The extension's name, as `DROP EXTENSION` and `ALTER EXTENSION` name it.
const EXTENSION: &CStr = c"event_store";

/// The database a utility statement must have alone, if it is one of the commands above and the
/// database exists; for a `CREATE DATABASE`, its template (`InvalidOid` for the default one).
///
/// # Safety
/// `stmt` is the utility statement of the `PlannedStmt` PostgreSQL passes to the hook.
unsafe fn database_command(stmt: *mut pg_sys::Node) -> Option<(pg_sys::Oid, Command)> {
    if stmt.is_null() {
        return None;
    }
    // SAFETY: the node's tag says which struct it is; each branch reads only that struct's
    // fields, whose strings and lists live in the statement's memory for the command's life (a
    // DropStmt's objects are nodes whose own tag is checked before a String's sval is read);
    // MyDatabaseId is the backend's database, set once at connection.
    let (name, command) = unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_DropdbStmt => {
                ((*stmt.cast::<pg_sys::DropdbStmt>()).dbname, Command::Drop)
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let rename = stmt.cast::<pg_sys::RenameStmt>();
                if (*rename).renameType != pg_sys::ObjectType::OBJECT_DATABASE {
                    return None;
                }
                ((*rename).subname, Command::Alter)
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let alter = stmt.cast::<pg_sys::AlterDatabaseStmt>();
                option((*alter).options, c"tablespace")?;
                ((*alter).dbname, Command::Alter)
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                let create = stmt.cast::<pg_sys::CreatedbStmt>();
                match option((*create).options, c"template") {
                    // `TEMPLATE DEFAULT` has no argument (createdb's own check)
                    Some(template) if !(*template).arg.is_null() => {
                        (pg_sys::defGetString(template), Command::CopyFrom)
                    }
                    // from template1: nothing to hold, but a new database to look at
                    _ => (ptr::null_mut(), Command::CopyFrom),
                }
            }
            pg_sys::NodeTag::T_DropStmt => {
                let drop = stmt.cast::<pg_sys::DropStmt>();
                if (*drop).removeType != pg_sys::ObjectType::OBJECT_EXTENSION {
                    return None;
                }
                // `DROP EXTENSION a, b`: a list of String nodes
                let names = pgrx::PgList::<pg_sys::Node>::from_pg((*drop).objects);
                let ours = names.iter_ptr().any(|n| {
                    !n.is_null()
                        && (*n).type_ == pg_sys::NodeTag::T_String
                        && !(*n.cast::<pg_sys::String>()).sval.is_null()
                        && CStr::from_ptr((*n.cast::<pg_sys::String>()).sval) == EXTENSION
                });
                return ours.then_some((pg_sys::MyDatabaseId, Command::Extension));
            }
            pg_sys::NodeTag::T_AlterExtensionStmt => {
                let alter = stmt.cast::<pg_sys::AlterExtensionStmt>();
                let ours =
                    !(*alter).extname.is_null() && CStr::from_ptr((*alter).extname) == EXTENSION;
                return ours.then_some((pg_sys::MyDatabaseId, Command::Extension));
            }
            _ => return None,
        }
    };
    if name.is_null() {
        return (command == Command::CopyFrom).then_some((pg_sys::InvalidOid, command));
    }
    // SAFETY: a NUL-terminated name from the parse tree; get_database_oid with missing_ok
    // returns InvalidOid for a database that does not exist (the command then fails by itself).
    let db = unsafe { pg_sys::get_database_oid(name, true) };
    (db != pg_sys::InvalidOid || command == Command::CopyFrom).then_some((db, command))
}

/// The `DefElem` named `name` in a statement's option list.
///
/// # Safety
/// `options` is NULL or a `List` of `DefElem` nodes, as the grammar builds them.
unsafe fn option(options: *mut pg_sys::List, name: &CStr) -> Option<*mut pg_sys::DefElem> {
    // SAFETY: the caller's contract; every cell holds a DefElem pointer.
    let list = unsafe { pgrx::PgList::<pg_sys::DefElem>::from_pg(options) };
    list.iter_ptr().find(|&def| {
        // SAFETY: a DefElem of the list; defname is NUL-terminated (or NULL).
        unsafe { !(*def).defname.is_null() && CStr::from_ptr((*def).defname) == name }
    })
}

// SAFETY: the declaration is PostgreSQL 15's prototype of `standard_ProcessUtility`
// (tcop/utility.h), the same as pgrx's guarded binding of that symbol; only its call site is
// different (no guard), and that call site keeps no value with a destructor on its frame.
unsafe extern "C-unwind" {
    /// PostgreSQL's `standard_ProcessUtility`, bound here without pgrx's error guard: an ERROR
    /// inside a utility statement must reach PostgreSQL's own handler unchanged (pgrx's guard
    /// would re-raise the store's custom SQLSTATEs, e.g. ES006 of a refused TRUNCATE, as XX000).
    #[link_name = "standard_ProcessUtility"]
    fn standard_process_utility_unguarded(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// Before a utility statement: takes hold of the database a database-level command needs alone
/// (its worker leaves; released when the transaction ends, see `worker_registry::transaction_ended`).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_utility(stmt: *mut pg_sys::Node) {
    // SAFETY: stmt is the utility statement PostgreSQL is about to run.
    let Some((db, command)) = (unsafe { database_command(stmt) }) else {
        return;
    };
    // a database the store never served (a template, one without the extension) has no worker
    // to move: nothing is held for it
    if db != pg_sys::InvalidOid {
        worker_registry::hold(db.to_u32(), WORKER_EXIT_WAIT);
    }
    if command == Command::CopyFrom {
        worker_registry::rescan_at_transaction_end();
    }
}

/// The hook. It has no value with a destructor and no pgrx guard: an ERROR raised by the
/// statement longjmps over this frame to PostgreSQL's handler exactly as without the extension.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: pstmt is the statement PostgreSQL passes to every ProcessUtility hook;
    // before_utility is guarded (its own ERRORs are re-raised as PostgreSQL ERRORs).
    unsafe { before_utility((*pstmt).utilityStmt) };
    let next = PREV
        .get()
        .copied()
        .flatten()
        .unwrap_or(standard_process_utility_unguarded);
    // SAFETY: the arguments PostgreSQL passed us, handed on unchanged to the previous hook or to
    // standard_ProcessUtility, as every ProcessUtility hook does; nothing in this frame needs
    // dropping if an ERROR jumps over it.
    unsafe {
        next(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        )
    }
}
