//! The relay of a PL/Proxy proxy (docs/reference.md §11 "Sharding by stream", docs/sharding.md
//! "Cost"): the C function `es_proxy_relay` that the proxy's routed `es` functions are, where the
//! proxy's server has this library (sql/plproxy/setup.sql decides; the proxy's database has no
//! extension, this is only a symbol of the library, like `es_stream_hash`).
//!
//! `es.<f>(id uuid, …)` calls its twin `es_proxy.<f>` (same argument types, a PL/Proxy function)
//! through fmgr with the caller's own call frame, and catches the ERROR it raises to give it back
//! without PL/Proxy's decoration (`event_store_core::proxy::undecorate`). This replaces a PL/pgSQL
//! wrapper whose `EXCEPTION` block cost a subtransaction per call: catching an error needs no
//! subtransaction when nothing runs after it but raising it again (PG_TRY/PG_CATCH with a
//! re-throw), which is all the relay does. Only errors of the twin's call are touched; the
//! library installs no hook and changes no other error of the server.
//!
//! What the SQL call of the twin checked, the relay checks on every call too: USAGE on schema
//! `es_proxy` and EXECUTE on the twin for the current user. The NULL id is refused first with the
//! store's 22004 (PL/Proxy cannot route a NULL).

use super::udf::call_catching;
use event_store_core::proxy::undecorate;
use event_store_core::subscription::stream_hash;
use event_store_core::{EventStoreError, RaisedError};
use pgrx::pg_sys::{self, Datum, Oid};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_int};

/// The schema of the raw PL/Proxy functions.
const TWINS: &CStr = c"es_proxy";

/// A relay function and what it calls for one shard, as resolved in catalog generation
/// `generation`.
#[derive(Clone)]
struct Relay {
    generation: u64,
    relay: Oid,
    /// The shard the call goes to (`None`: the server es_shards has no shard options).
    shard: Option<i32>,
    /// `es_proxy.<f>`: routes by its `RUN ON es_proxy.route(id)`; whose privileges count.
    twin: Oid,
    /// The SQL name of the routing argument (the first), for the 22004 message.
    key: std::rc::Rc<str>,
    /// Schema es_proxy, whose USAGE the call needs.
    namespace: Oid,
    /// fmgr's look-up of what the call goes to: `es_proxy.<f>_on_<shard>` (`RUN ON <shard>`:
    /// PL/Proxy runs no hash query) where sql/plproxy/setup.sql made it, else `twin`; made once,
    /// it lives in [`MEMORY`] until the catalog generation moves.
    flinfo: *mut pg_sys::FmgrInfo,
    /// What the relay sends itself (`pg/wire.rs`) when `es.proxy_wire` is on: made where the
    /// `_on_<shard>` twin's body is the plain call of the shard's `es.<f>` with the same
    /// arguments of built-in types; `None` keeps the twin's path. Its FmgrInfos live in
    /// [`MEMORY`] too.
    wire: Option<std::rc::Rc<super::wire::Statement>>,
}

thread_local! {
    static GENERATION: Cell<u64> = const { Cell::new(1) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    static RELAYS: RefCell<Vec<Relay>> = const { RefCell::new(Vec::new()) };
    /// (generation, the number of shards of server es_shards; 0: no such server)
    static SHARDS: Cell<(u64, i32)> = const { Cell::new((0, 0)) };
    /// (generation, the memory of the relays' FmgrInfos): a context under CacheMemoryContext,
    /// reset with RELAYS cleared when the generation moved and no relayed call is running.
    static MEMORY: Cell<(u64, pg_sys::MemoryContext)> =
        const { Cell::new((0, std::ptr::null_mut())) };
    /// How many relayed calls of this backend are running (one, unless a twin's call ran a relay).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// The memory for the FmgrInfos of relays resolved in `generation`. An older generation's is
/// reset first (and RELAYS, which points into it, cleared) unless a relayed call is running and
/// may be using one; then the reset waits for the next call.
fn memory(generation: u64) -> pg_sys::MemoryContext {
    let (made_in, context) = MEMORY.with(Cell::get);
    if context.is_null() {
        // SAFETY: a context under CacheMemoryContext, which lives as long as the backend; the
        // name is a static string.
        let context = unsafe {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::CacheMemoryContext,
                c"event_store proxy relay".as_ptr(),
                0,
                1024,
                8192,
            )
        };
        MEMORY.with(|m| m.set((generation, context)));
        return context;
    }
    if made_in != generation && DEPTH.with(Cell::get) == 0 {
        RELAYS.with(|r| r.borrow_mut().clear());
        // SAFETY: nothing points into the context any more: RELAYS was just cleared and no
        // relayed call is running (DEPTH), so no call frame holds one of its FmgrInfos.
        unsafe { pg_sys::MemoryContextReset(context) };
        MEMORY.with(|m| m.set((generation, context)));
    }
    context
}

/// A syscache callback (`pg_proc`, `pg_namespace`, `pg_foreign_server`): only notes the change.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn changed(_arg: Datum, _cache: i32, _hash: u32) {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// The catalog generation; registers the callbacks on the backend's first relayed call, so only
/// a proxy's backends carry them and nothing is remembered before they are registered.
fn generation() -> u64 {
    if !REGISTERED.with(Cell::get) {
        // SAFETY: registers a static callback on three caches, once per backend (the flag);
        // PostgreSQL keeps it for the life of the process.
        unsafe {
            for cache in [
                pg_sys::SysCacheIdentifier::PROCOID,
                pg_sys::SysCacheIdentifier::NAMESPACEOID,
                pg_sys::SysCacheIdentifier::FOREIGNSERVEROID,
            ] {
                pg_sys::CacheRegisterSyscacheCallback(
                    cache as c_int,
                    Some(changed),
                    Datum::from(0usize),
                );
            }
        }
        REGISTERED.with(|r| r.set(true));
    }
    GENERATION.with(Cell::get)
}

/// The function `namespace.name` with the argument types `args` returning `rettype` (not a
/// set), or `InvalidOid`.
///
/// # Safety
/// `args` points at a valid `oidvector`.
unsafe fn function_named(
    namespace: Oid,
    name: &str,
    args: *mut pg_sys::oidvector,
    rettype: Oid,
) -> Oid {
    let Ok(name) = std::ffi::CString::new(name) else {
        return pg_sys::InvalidOid;
    };
    // SAFETY: a NameData on the stack filled by namestrcpy (truncated to NAMEDATALEN like any
    // name), a syscache look-up by (name, argument types, namespace), then one by OID whose
    // fixed-size part is read while held and released.
    unsafe {
        let mut proname: pg_sys::NameData = std::mem::zeroed();
        pg_sys::namestrcpy(&mut proname, name.as_ptr());
        let oid = pg_sys::GetSysCacheOid(
            pg_sys::SysCacheIdentifier::PROCNAMEARGSNSP as c_int,
            pg_sys::Anum_pg_proc_oid as pg_sys::AttrNumber,
            Datum::from(std::ptr::addr_of_mut!(proname)),
            Datum::from(args),
            Datum::from(namespace),
            Datum::from(0usize),
        );
        if oid == pg_sys::InvalidOid {
            return oid;
        }
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            Datum::from(oid),
        );
        if tuple.is_null() {
            return pg_sys::InvalidOid;
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_proc>();
        let same = (*form).prorettype == rettype && !(*form).proretset;
        pg_sys::ReleaseSysCache(tuple);
        if same { oid } else { pg_sys::InvalidOid }
    }
}

/// What `relay` calls for `shard`: `es_proxy.<its name>_on_<shard>`, else `es_proxy.<its name>`,
/// with the same argument types, returning the same single type (55000 when there is no
/// `es_proxy.<its name>`: the proxy was set up by an older script).
fn resolve(relay: Oid, generation: u64, shard: Option<i32>) -> Result<Relay, EventStoreError> {
    let memory = memory(generation);
    let missing = |what: &str| {
        EventStoreError::Raised(RaisedError {
            sqlstate: "55000".into(),
            message: format!("the proxy's relay {what}"),
            detail: None,
            hint: Some(
                "Run scripts/shard.sh again: it sets up the es_proxy functions of this proxy."
                    .into(),
            ),
            context: None,
        })
    };
    // Syscache look-ups by OID and by (name, argument types, namespace); the fixed-size part of
    // the tuples is read while they are held, names copied, tuples released; the argument names
    // come palloc'd from get_func_arg_info. The FmgrInfo is allocated zeroed in the relays'
    // memory and filled by fmgr_info_cxt for an existing function, whatever it allocates going
    // to that memory too.
    // SAFETY: tuples read only while held, then released; the FmgrInfo in the relays' memory.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            Datum::from(relay),
        );
        if tuple.is_null() {
            return Err(missing("function no longer exists"));
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_proc>();
        let (rettype, retset, nargs) = ((*form).prorettype, (*form).proretset, (*form).pronargs);
        let mut types: *mut Oid = std::ptr::null_mut();
        let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
        let mut modes: *mut std::ffi::c_char = std::ptr::null_mut();
        pg_sys::get_func_arg_info(tuple, &mut types, &mut names, &mut modes);
        let key = if names.is_null() || (*names).is_null() {
            "stream_id".to_owned()
        } else {
            CStr::from_ptr(*names).to_string_lossy().into_owned()
        }
        .into();
        let name = CStr::from_ptr((*form).proname.data.as_ptr())
            .to_string_lossy()
            .into_owned();
        let namespace = pg_sys::get_namespace_oid(TWINS.as_ptr(), true);
        let args = std::ptr::addr_of_mut!((*form).proargtypes);
        // a relay routes by its first argument, a uuid (16 bytes read by the call)
        let routed = nargs >= 1 && *(*form).proargtypes.values.as_ptr() == pg_sys::UUIDOID;
        let (twin, exact) = if namespace == pg_sys::InvalidOid || retset || !routed {
            (pg_sys::InvalidOid, pg_sys::InvalidOid)
        } else {
            (
                function_named(namespace, &name, args, rettype),
                shard.map_or(pg_sys::InvalidOid, |k| {
                    function_named(namespace, &format!("{name}_on_{k}"), args, rettype)
                }),
            )
        };
        pg_sys::ReleaseSysCache(tuple);
        if twin == pg_sys::InvalidOid {
            return Err(missing(&format!(
                "es.{name} has no twin es_proxy.{name} with its arguments and result to call"
            )));
        }
        let flinfo =
            pg_sys::MemoryContextAllocZero(memory, std::mem::size_of::<pg_sys::FmgrInfo>())
                .cast::<pg_sys::FmgrInfo>();
        let target = if exact == pg_sys::InvalidOid {
            twin
        } else {
            exact
        };
        pg_sys::fmgr_info_cxt(target, flinfo, memory);
        if (*flinfo).fn_addr.is_none() {
            return Err(missing(&format!("found no handler for es_proxy.{name}")));
        }
        let wire = match shard {
            Some(k) if exact != pg_sys::InvalidOid => {
                wire_statement(exact, &name, k, memory).map(std::rc::Rc::new)
            }
            _ => None,
        };
        Ok(Relay {
            generation,
            relay,
            shard,
            twin,
            key,
            namespace,
            flinfo,
            wire,
        })
    }
}

/// The built-in types a wired call's arguments and result may have: the same OIDs on every
/// server, with send and receive functions.
const WIRE_TYPES: [Oid; 9] = [
    pg_sys::UUIDOID,
    pg_sys::INT8OID,
    pg_sys::INT4OID,
    pg_sys::BOOLOID,
    pg_sys::TEXTOID,
    pg_sys::JSONBOID,
    pg_sys::JSONBARRAYOID,
    pg_sys::TIMESTAMPTZOID,
    pg_sys::VOIDOID,
];

/// The statement the relay sends itself for `twin` (`es_proxy.<name>_on_<shard>`), when its
/// body is `CLUSTER 'es_shards'; RUN ON <shard>;` and then `SELECT es.<name>(<its arguments
/// in order>);` or `TARGET es.<name>;`, and its argument and result types are among
/// [`WIRE_TYPES`]; `None` otherwise (the twin's path stays).
///
/// # Safety
/// `memory` is the relays' memory context (the FmgrInfos go there).
unsafe fn wire_statement(
    twin: Oid,
    name: &str,
    shard: i32,
    memory: pg_sys::MemoryContext,
) -> Option<super::wire::Statement> {
    // A syscache look-up by OID; prosrc is copied into a Rust string and the argument
    // types and names (palloc'd by get_func_arg_info) read while the tuple is held, then it
    // is released; getTypeBinary*Info and fmgr_info_cxt run for built-in types (WIRE_TYPES),
    // which all have send and receive functions, their FmgrInfos allocated in `memory`.
    // SAFETY: the tuple read only while held; FmgrInfos of built-in types in `memory`.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            Datum::from(twin),
        );
        if tuple.is_null() {
            return None;
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_proc>();
        let (result, nargs) = ((*form).prorettype, (*form).pronargs as usize);
        let mut isnull = false;
        let src = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            tuple,
            pg_sys::Anum_pg_proc_prosrc as pg_sys::AttrNumber,
            &mut isnull,
        );
        let body = if isnull {
            String::new()
        } else {
            CStr::from_ptr(pg_sys::text_to_cstring(src.cast_mut_ptr()))
                .to_string_lossy()
                .into_owned()
        };
        let mut types: *mut Oid = std::ptr::null_mut();
        let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
        let mut modes: *mut std::ffi::c_char = std::ptr::null_mut();
        let n = pg_sys::get_func_arg_info(tuple, &mut types, &mut names, &mut modes) as usize;
        let mut args = Vec::with_capacity(n);
        let mut arg_types = Vec::with_capacity(n);
        for i in 0..n {
            arg_types.push(*types.add(i));
            args.push(if names.is_null() || (*names.add(i)).is_null() {
                String::new()
            } else {
                CStr::from_ptr(*names.add(i)).to_string_lossy().into_owned()
            });
        }
        pg_sys::ReleaseSysCache(tuple);
        if n != nargs || !modes.is_null() || args.iter().any(String::is_empty) {
            return None;
        }
        if !arg_types
            .iter()
            .chain([&result])
            .all(|t| WIRE_TYPES.contains(t))
        {
            return None;
        }
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let call = format!("SELECT es.{name}({});", args.join(", "));
        let target = format!("TARGET es.{name};");
        let head = format!("CLUSTER 'es_shards'; RUN ON {shard}; ");
        let rest = body.strip_prefix(&head)?;
        if rest != call && rest != target {
            return None;
        }
        let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let sql =
            std::ffi::CString::new(format!("SELECT es.{name}({})", params.join(", "))).ok()?;
        let mut send = Vec::with_capacity(n);
        for t in &arg_types {
            let mut func = pg_sys::InvalidOid;
            let mut varlena = false;
            pg_sys::getTypeBinaryOutputInfo(*t, &mut func, &mut varlena);
            let flinfo =
                pg_sys::MemoryContextAllocZero(memory, std::mem::size_of::<pg_sys::FmgrInfo>())
                    .cast::<pg_sys::FmgrInfo>();
            pg_sys::fmgr_info_cxt(func, flinfo, memory);
            send.push(flinfo);
        }
        let mut func = pg_sys::InvalidOid;
        let mut recv_param = pg_sys::InvalidOid;
        pg_sys::getTypeBinaryInputInfo(result, &mut func, &mut recv_param);
        let recv = pg_sys::MemoryContextAllocZero(memory, std::mem::size_of::<pg_sys::FmgrInfo>())
            .cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info_cxt(func, recv, memory);
        Some(super::wire::Statement {
            sql,
            twin_label: format!("es_proxy.{name}_on_{shard}({n})"),
            types: arg_types,
            send,
            result,
            recv,
            recv_param,
        })
    }
}

/// Whether function `oid` exists and its first argument is a uuid.
fn first_argument_is_uuid(oid: Oid) -> bool {
    // SAFETY: a syscache look-up by OID; the fixed-size part (pronargs, proargtypes) is read
    // while the tuple is held, then released.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            Datum::from(oid),
        );
        if tuple.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_proc>();
        let uuid = (*form).pronargs >= 1 && *(*form).proargtypes.values.as_ptr() == pg_sys::UUIDOID;
        pg_sys::ReleaseSysCache(tuple);
        uuid
    }
}

/// Raises PostgreSQL's own 42501 unless the current user may use schema es_proxy and execute
/// `twin`, as the SQL call of the twin would.
fn check_access(namespace: Oid, twin: Oid) {
    // SAFETY: ACL checks of an existing namespace and function for the current user;
    // aclcheck_error raises PostgreSQL's own "permission denied" ERROR (inside the caller's
    // guard) and does not return for a refusal.
    unsafe {
        let user = pg_sys::GetUserId();
        #[cfg(feature = "pg15")]
        let (schema, function) = (
            pg_sys::pg_namespace_aclcheck(namespace, user, pg_sys::ACL_USAGE as pg_sys::AclMode),
            pg_sys::pg_proc_aclcheck(twin, user, pg_sys::ACL_EXECUTE as pg_sys::AclMode),
        );
        #[cfg(feature = "pg18")]
        let (schema, function) = (
            pg_sys::object_aclcheck(
                pg_sys::NamespaceRelationId,
                namespace,
                user,
                pg_sys::ACL_USAGE as pg_sys::AclMode,
            ),
            pg_sys::object_aclcheck(
                pg_sys::ProcedureRelationId,
                twin,
                user,
                pg_sys::ACL_EXECUTE as pg_sys::AclMode,
            ),
        );
        if schema != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(schema, pg_sys::ObjectType::OBJECT_SCHEMA, TWINS.as_ptr());
        }
        if function != pg_sys::AclResult::ACLCHECK_OK {
            let name = pg_sys::get_func_name(twin);
            pg_sys::aclcheck_error(function, pg_sys::ObjectType::OBJECT_FUNCTION, name);
        }
    }
}

/// One relayed call (the body of `es_proxy_relay`, under pgrx's guard).
///
/// # Safety
/// `fcinfo` is fmgr's valid call frame of a relay function (`es_proxy_relay`).
unsafe fn relay(fcinfo: pg_sys::FunctionCallInfo) -> Result<Datum, EventStoreError> {
    let generation = generation();
    // SAFETY: the caller's contract: fcinfo and its flinfo are valid for the call.
    let relay_oid = unsafe { (*(*fcinfo).flinfo).fn_oid };
    // The first argument is read as a uuid only once the relay's declaration says it is one:
    // resolved in this generation (resolve checks it), or checked here.
    let resolved = RELAYS.with(|r| {
        r.borrow()
            .iter()
            .any(|k| k.relay == relay_oid && k.generation == generation)
    });
    if !resolved && !first_argument_is_uuid(relay_oid) {
        return Err(EventStoreError::Raised(RaisedError {
            sqlstate: "55000".into(),
            message: "es_proxy_relay serves functions whose first argument is a uuid".into(),
            detail: None,
            hint: None,
            context: None,
        }));
    }
    // SAFETY: the caller's contract; the function's first argument is a uuid (above): 16 bytes
    // behind the pointer datum when not NULL, copied here.
    let key = unsafe {
        let first = ((*fcinfo).nargs > 0).then(|| *(*fcinfo).args.as_ptr());
        first
            .filter(|f| !f.isnull)
            .map(|f| *f.value.cast_mut_ptr::<[u8; 16]>())
    };
    let (counted, shards) = SHARDS.with(Cell::get);
    let shards = if counted == generation {
        shards
    } else {
        let n = super::wire::shard_count();
        SHARDS.with(|s| s.set((generation, n)));
        n
    };
    // as PL/Proxy routes: the hash masked by the shard count (a NULL id has none: 22004 below,
    // once the relay's argument name is known)
    let shard = key
        .filter(|_| shards > 0)
        .map(|k| stream_hash(&k) & (shards - 1));
    let known = RELAYS.with(|r| {
        r.borrow()
            .iter()
            .find(|k| k.relay == relay_oid && k.shard == shard && k.generation == generation)
            .cloned()
    });
    let relay = match known {
        Some(r) => r,
        None => {
            let r = resolve(relay_oid, generation, shard)?;
            RELAYS.with(|all| {
                let mut all = all.borrow_mut();
                all.retain(|k| k.generation == generation);
                all.push(r.clone());
            });
            r
        }
    };
    if key.is_none() {
        return Err(EventStoreError::Raised(RaisedError {
            sqlstate: event_store_core::sqlstate::NULL_VALUE_NOT_ALLOWED.into(),
            message: format!("{} must not be null", relay.key),
            detail: None,
            hint: None,
            context: None,
        }));
    }
    check_access(relay.namespace, relay.twin);
    if let (Some(shard), Some(statement)) = (relay.shard, relay.wire.as_ref())
        && super::wire::PROXY_WIRE.get()
    {
        // fcinfo is the relay's frame (the caller's contract), its arguments of the
        // statement's types (the twin has the relay's argument types); the statement's
        // FmgrInfos live in MEMORY, which no relay resets during this call (none is resolved
        // in it).
        // SAFETY: the relay's own frame; the statement's FmgrInfos alive in MEMORY.
        match unsafe { super::wire::call(shard, statement, fcinfo) } {
            super::wire::Outcome::Done(datum, isnull) => {
                // SAFETY: the caller's frame.
                unsafe { (*fcinfo).isnull = isnull };
                return Ok(datum);
            }
            super::wire::Outcome::Failed(raised) => return Err(EventStoreError::Raised(raised)),
            super::wire::Outcome::Twin => {}
        }
    }
    // relay.flinfo is fmgr's lookup of the twin (an existing function with the relay's argument
    // and result types, its handler checked by resolve), alive in MEMORY: nothing resets it
    // while DEPTH counts this call. The caller's frame is lent to the twin with that FmgrInfo
    // (the same arguments in the same types; fn_expr the caller's expression, whose argument
    // types are the same) and given back on both paths; call_catching's contract holds (the
    // frame is set up for the twin's handler, and this frame owns nothing that a longjmp could
    // skip: only raw pointers and copies).
    // SAFETY: the twin's live FmgrInfo on the caller's frame, restored on both paths.
    let result = unsafe {
        let own = (*fcinfo).flinfo;
        let twin = relay.flinfo;
        let Some(handler) = (*twin).fn_addr else {
            unreachable!("resolve checked the handler");
        };
        (*twin).fn_expr = (*own).fn_expr;
        (*fcinfo).flinfo = twin;
        (*fcinfo).isnull = false;
        DEPTH.with(|d| d.set(d.get() + 1));
        let result = call_catching(handler, fcinfo);
        DEPTH.with(|d| d.set(d.get() - 1));
        (*twin).fn_expr = std::ptr::null_mut();
        (*fcinfo).flinfo = own;
        result
    };
    result.map_err(|raised| EventStoreError::Raised(undecorate(raised, relay.shard)))
}

/// C entry point of the proxy's routed scalar `es` functions (sql/plproxy/setup.sql declares
/// them `LANGUAGE c AS '$libdir/event_store', 'es_proxy_relay'`).
///
/// # Safety
/// Called by PostgreSQL's fmgr with a valid `fcinfo` of such a function.
// SAFETY (no_mangle): the exported name carries the store's prefix, so no other symbol of the
// server or of a library loaded beside it (PostgreSQL loads them RTLD_GLOBAL) has it.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn es_proxy_relay(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: fmgr's valid fcinfo (relay's contract); the guard turns PostgreSQL errors and
    // panics inside into ERRORs, and this frame owns nothing when raise jumps away.
    let outcome = unsafe { pgrx::pgrx_extern_c_guard(|| relay(fcinfo)) };
    match outcome {
        Ok(datum) => datum,
        Err(err) => super::error::raise(err, c"es_proxy_relay"),
    }
}

/// fmgr's version-1 record for `es_proxy_relay`, which fmgr looks up by this name.
// SAFETY (no_mangle): the name is the one fmgr derives from `es_proxy_relay`, unique to this
// library for the same reason; the function returns a static and takes nothing.
#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_es_proxy_relay() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}
