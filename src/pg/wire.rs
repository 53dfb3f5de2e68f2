//! The proxy relay's own wire to a shard (docs/sharding.md "Cost"): where the relay
//! (`pg/proxy.rs`) can, it sends a routed call itself over a libpq connection of its own per
//! (shard, user) instead of calling the PL/Proxy twin, as a **prepared statement** with binary
//! arguments and result, so the partition binds and executes a kept plan instead of parsing,
//! analyzing and planning PL/Proxy's unnamed statement and reading its arguments as text.
//!
//! It connects exactly where PL/Proxy would, with the same credentials: option `p<k>` of server
//! `es_shards`, and, unless that string names a `user=`, the current user's user mapping of the
//! server (or PUBLIC's) with `user=<current user>` added when the mapping has none (PL/Proxy
//! 2.11's `get_connstr`/`reload_sqlmed_user`), after the same USAGE check on the server.
//! `client_encoding` is the proxy database's, as PL/Proxy sets it. A cluster with options
//! PL/Proxy acts on itself (timeouts, lifetimes, binary I/O, modular mapping, keepalives) or
//! options on its foreign data wrapper is left to the twin: the relay does not copy them.
//!
//! Like PL/Proxy, each call is its own autocommit statement on the partition: it commits there
//! when the call returns, whatever the proxy's transaction does afterwards.
//!
//! Never blocking uninterruptibly: the connection is non-blocking, every wait is
//! a wait on its socket and the latch with `CHECK_FOR_INTERRUPTS` (as libpqwalreceiver and
//! postgres_fdw wait; a connected connection keeps its wait event set, so a call's wait costs
//! one `epoll_wait`). A connection in use is owned by the call's frame
//! ([`Wire`]); when an interrupt or any ERROR unwinds that frame, its `Drop` sends a cancel and
//! closes it (its state is unknown); only a call that read its whole result gives it back to the
//! backend's cache. A cached connection found bad or not idle is closed and opened again.
//! The cache is emptied when server `es_shards`, a user mapping or a foreign data wrapper changes
//! (syscache invalidation) and at backend exit.
//!
//! libpq is never linked: the backend that makes its first wired call loads the server's own
//! libpq 5 with `dlopen` (one already in the process, such as PL/Proxy's, is reused), so the
//! postmaster and every other process never map it (see `pq`). Where it cannot be loaded, the
//! backend says so once (a WARNING with the file and the dynamic linker's error) and its routed
//! calls take the twin's path.
//!
//! Errors: a shard's ERROR is given back with its SQLSTATE, message, DETAIL and HINT, a lost or
//! refused shard as 08006/08001 with the texts of the twin's path: the failure is written as
//! PL/Proxy writes it and passed through the same `undecorate`.

use event_store_core::RaisedError;
use event_store_core::proxy::undecorate;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::time::{Duration, Instant};

/// `es.proxy_wire` (default on): whether the relay sends routed calls itself (off: through the
/// PL/Proxy twin, the path of a proxy without this feature).
pub static PROXY_WIRE: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Defines `es.proxy_wire`. Call once, from `_PG_init`, before `settings::init`.
pub fn install() {
    GucRegistry::define_bool_guc(
        c"es.proxy_wire",
        c"Lets a PL/Proxy proxy's relay send routed calls to the shard itself, as prepared statements with binary arguments.",
        c"Off: every routed call goes through the PL/Proxy function es_proxy.<f>_on_<shard>, whose statement the partition parses and plans at every call.",
        &PROXY_WIRE,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// libpq's C interface, the calls this module makes. Never linked: PostgreSQL opens a library of
/// `shared_preload_libraries` in the postmaster with `RTLD_GLOBAL`, so a libpq it links would be
/// in every server process, first in line for the libpq calls of whatever loads later (a
/// standby's WAL receiver, `CREATE SUBSCRIPTION`, dblink, postgres_fdw) and found by its soname,
/// even when it is another installation's. So libpq is opened by the backend that makes its
/// first wired call ([`load`]), `RTLD_LOCAL`, and called through pointers resolved once.
#[allow(non_snake_case)] // libpq's own names
mod pq {
    use super::{Oid, c_char, c_int, c_void};
    use pgrx::pg_sys;
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStringExt;
    use std::sync::OnceLock;

    /// libpq's connection (opaque).
    #[repr(C)]
    pub struct PGconn {
        _private: [u8; 0],
    }
    /// libpq's result (opaque).
    #[repr(C)]
    pub struct PGresult {
        _private: [u8; 0],
    }
    /// libpq's cancel handle (opaque).
    #[repr(C)]
    pub struct PGcancel {
        _private: [u8; 0],
    }

    pub const POLLING_FAILED: c_int = 0;
    pub const POLLING_READING: c_int = 1;
    pub const POLLING_WRITING: c_int = 2;
    pub const POLLING_OK: c_int = 3;
    pub const CONNECTION_OK: c_int = 0;
    pub const COMMAND_OK: c_int = 1;
    pub const TUPLES_OK: c_int = 2;
    pub const FATAL_ERROR: c_int = 7;
    pub const TRANS_IDLE: c_int = 0;
    pub const DIAG_SEVERITY: c_int = b'S' as c_int;
    pub const DIAG_SEVERITY_NONLOCALIZED: c_int = b'V' as c_int;
    pub const DIAG_SQLSTATE: c_int = b'C' as c_int;
    pub const DIAG_MESSAGE_PRIMARY: c_int = b'M' as c_int;
    pub const DIAG_MESSAGE_DETAIL: c_int = b'D' as c_int;
    pub const DIAG_MESSAGE_HINT: c_int = b'H' as c_int;

    /// A notice receiver.
    pub type NoticeReceiver = unsafe extern "C" fn(arg: *mut c_void, res: *const PGresult);

    /// libpq's soname: major version 5, whose prototypes below have not changed since libpq 5
    /// began (PostgreSQL 8.2).
    const SONAME: &CStr = c"libpq.so.5";

    /// Declares libpq's functions once: [`Api`], the table of their addresses resolved by name,
    /// and for each a function of the same name and prototype that calls through the table.
    macro_rules! libpq {
        ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
            /// libpq's functions in the library [`load`] opened.
            pub struct Api {
                $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
            }

            impl Api {
                /// Resolves every function in `handle`, or says which one is missing.
                ///
                /// # Safety
                /// `handle` is a dlopen handle of libpq 5 that is never closed.
                unsafe fn resolve(handle: *mut c_void) -> Result<Api, String> {
                    Ok(Api {
                        $($name: {
                            let address = symbol(handle, concat!(stringify!($name), "\0"))?;
                            // libpq-fe.h's prototype of this name, stable for libpq 5; the handle
                            // is never closed, so the address is valid for the process's life
                            // SAFETY: the symbol's C prototype is this pointer type's.
                            unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(address) }
                        },)*
                    })
                }
            }

            $(
                /// libpq's function of this name, through the loaded library.
                ///
                /// # Safety
                /// libpq's own contract for it; libpq was loaded (a connection, result or
                /// cancel handle exists only after [`load`] succeeded).
                pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: the caller's contract: the arguments are as libpq requires.
                    unsafe { (api().$name)($($arg),*) }
                }
            )*
        };
    }

    libpq! {
        fn PQconnectStartParams(
            keywords: *const *const c_char,
            values: *const *const c_char,
            expand_dbname: c_int,
        ) -> *mut PGconn;
        fn PQconnectPoll(conn: *mut PGconn) -> c_int;
        fn PQstatus(conn: *const PGconn) -> c_int;
        fn PQtransactionStatus(conn: *const PGconn) -> c_int;
        fn PQsocket(conn: *const PGconn) -> c_int;
        fn PQdb(conn: *const PGconn) -> *const c_char;
        fn PQerrorMessage(conn: *const PGconn) -> *const c_char;
        fn PQfinish(conn: *mut PGconn);
        fn PQsetnonblocking(conn: *mut PGconn, arg: c_int) -> c_int;
        fn PQsetNoticeReceiver(
            conn: *mut PGconn,
            proc_: Option<NoticeReceiver>,
            arg: *mut c_void,
        ) -> Option<NoticeReceiver>;
        fn PQsendPrepare(
            conn: *mut PGconn,
            name: *const c_char,
            query: *const c_char,
            n_params: c_int,
            param_types: *const Oid,
        ) -> c_int;
        fn PQsendQueryPrepared(
            conn: *mut PGconn,
            name: *const c_char,
            n_params: c_int,
            values: *const *const c_char,
            lengths: *const c_int,
            formats: *const c_int,
            result_format: c_int,
        ) -> c_int;
        fn PQflush(conn: *mut PGconn) -> c_int;
        fn PQconsumeInput(conn: *mut PGconn) -> c_int;
        fn PQisBusy(conn: *mut PGconn) -> c_int;
        fn PQgetResult(conn: *mut PGconn) -> *mut PGresult;
        fn PQresultStatus(res: *const PGresult) -> c_int;
        fn PQresultErrorField(res: *const PGresult, field: c_int) -> *const c_char;
        fn PQresultErrorMessage(res: *const PGresult) -> *const c_char;
        fn PQntuples(res: *const PGresult) -> c_int;
        fn PQnfields(res: *const PGresult) -> c_int;
        fn PQftype(res: *const PGresult, column: c_int) -> Oid;
        fn PQgetisnull(res: *const PGresult, row: c_int, column: c_int) -> c_int;
        fn PQgetlength(res: *const PGresult, row: c_int, column: c_int) -> c_int;
        fn PQgetvalue(res: *const PGresult, row: c_int, column: c_int) -> *const c_char;
        fn PQclear(res: *mut PGresult);
        fn PQgetCancel(conn: *mut PGconn) -> *mut PGcancel;
        fn PQcancel(cancel: *mut PGcancel, errbuf: *mut c_char, size: c_int) -> c_int;
        fn PQfreeCancel(cancel: *mut PGcancel);
    }

    /// The backend's libpq: loaded at most once per process, at its first wired call (a
    /// failure is kept too: it is not tried again).
    static LIBPQ: OnceLock<Result<Api, String>> = OnceLock::new();

    /// The loaded table (only called where a connection exists, so after [`load`] succeeded).
    fn api() -> &'static Api {
        match LIBPQ.get() {
            Some(Ok(api)) => api,
            _ => unreachable!("libpq is called only after it was loaded"),
        }
    }

    /// Loads libpq in this backend if it is not yet: `Err` says which file failed and why
    /// (dlerror), and the caller takes the path without the wire.
    pub fn load() -> Result<(), &'static str> {
        match LIBPQ.get_or_init(open) {
            Ok(_) => Ok(()),
            Err(why) => Err(why),
        }
    }

    /// Opens the server's own libpq and resolves its functions. A libpq 5 already in the
    /// process is used as it is, never a second copy beside it: plproxy.so links one, and the
    /// relay resolves its PL/Proxy twin (loading plproxy.so) before its first wired call; else the installation's `<libdir>/libpq.so.5`, so that whatever this backend loads
    /// later and finds libpq by its soname gets the server's own; else the soname, through the
    /// dynamic linker's search. `RTLD_LOCAL`: its symbols resolve nothing else's.
    fn open() -> Result<Api, String> {
        let (handle, file) = loaded().unwrap_or_else(|| {
            let file = own_file()
                .and_then(|path| CString::new(path).ok())
                .unwrap_or_else(|| SONAME.to_owned());
            // dlopen runs only the initializers of libpq and the libraries it needs (TLS,
            // Kerberos), which set up their own state
            // SAFETY: a NUL-terminated file name.
            let handle = unsafe { libc::dlopen(file.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            (handle, file)
        });
        let file = file.to_string_lossy().into_owned();
        if handle.is_null() {
            return Err(format!("{file}: {}", dlerror()));
        }
        // SAFETY: a handle of a libpq.so.5 that is never dlclosed.
        unsafe { Api::resolve(handle) }.map_err(|why| format!("{file}: {why}"))
    }

    /// The libpq 5 already mapped in this process, if any.
    fn loaded() -> Option<(*mut c_void, CString)> {
        // SAFETY: a NUL-terminated soname; RTLD_NOLOAD maps nothing, it only finds a loaded
        // object of that name or soname (and takes a reference on it, never dropped).
        let handle = unsafe {
            libc::dlopen(
                SONAME.as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NOLOAD,
            )
        };
        (!handle.is_null()).then(|| (handle, SONAME.to_owned()))
    }

    /// `<libdir>/libpq.so.5` of the running installation (`pg_config --libdir`, computed from
    /// the server's executable as PostgreSQL does, relocated installations included), if it
    /// exists.
    fn own_file() -> Option<Vec<u8>> {
        let mut buf = [0 as c_char; pg_sys::MAXPGPATH as usize];
        // `my_exec_path` is the server's NUL-terminated path of its executable, set at
        // start; get_lib_path writes at most MAXPGPATH bytes, NUL included, into `buf`, and
        // raises nothing (path arithmetic only).
        // SAFETY: path arithmetic from a NUL-terminated path into a MAXPGPATH buffer.
        unsafe {
            pg_sys::get_lib_path(
                std::ptr::addr_of!(pg_sys::my_exec_path).cast::<c_char>(),
                buf.as_mut_ptr(),
            )
        };
        // SAFETY: get_lib_path NUL-terminated `buf`.
        let libdir = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_bytes();
        if libdir.is_empty() {
            return None;
        }
        let mut path = std::path::PathBuf::from(std::ffi::OsString::from_vec(libdir.to_vec()));
        path.push("libpq.so.5");
        path.is_file().then(|| path.into_os_string().into_vec())
    }

    /// The address of function `name` (NUL-terminated) in `handle`, or why it is missing.
    fn symbol(handle: *mut c_void, name: &str) -> Result<*mut c_void, String> {
        let Ok(cname) = CStr::from_bytes_with_nul(name.as_bytes()) else {
            return Err(format!("{name}: not a symbol name"));
        };
        // SAFETY: clears a stale error, then looks up a NUL-terminated name in a live handle.
        let address = unsafe {
            libc::dlerror();
            libc::dlsym(handle, cname.as_ptr())
        };
        if address.is_null() {
            return Err(dlerror());
        }
        Ok(address)
    }

    /// The dynamic linker's last error, copied.
    fn dlerror() -> String {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call
        // of this thread; it is copied at once.
        let text = unsafe { libc::dlerror() };
        if text.is_null() {
            return "unknown error".into();
        }
        // SAFETY: as above.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// What one routed function sends: its statement and how its arguments and result cross the
/// wire. Made by the relay once per catalog generation; its `FmgrInfo`s live in the relays'
/// memory (the caller's contract of [`call`]).
pub struct Statement {
    /// `SELECT es.<f>($1, …)`, the call the twin's body makes.
    pub sql: CString,
    /// The twin's name as PL/Proxy writes it in its errors: `es_proxy.<f>_on_<k>(<nargs>)`.
    pub twin_label: String,
    /// The arguments' types (built-in types: the same OIDs on the partition).
    pub types: Vec<Oid>,
    /// Each argument type's send function.
    pub send: Vec<*mut pg_sys::FmgrInfo>,
    /// The result type.
    pub result: Oid,
    /// The result type's receive function and its I/O parameter.
    pub recv: *mut pg_sys::FmgrInfo,
    /// The I/O parameter of the result type's receive function.
    pub recv_param: Oid,
}

/// How a call went when the wire could not be used at all: the caller takes the twin's path.
pub enum Outcome {
    /// The call ran on the shard: its result (the datum, whether NULL).
    Done(Datum, bool),
    /// The shard's error or the wire's failure, as the client gets it.
    Failed(RaisedError),
    /// Nothing was sent: this cluster or user is left to the twin (see the module's header).
    Twin,
}

/// One connection of the cache to a shard, for one user, opened in cache epoch `epoch`.
struct Conn {
    shard: i32,
    user: Oid,
    epoch: u64,
    conn: *mut pq::PGconn,
    /// The statements prepared on it, by text; the n-th is named `es_relay_<n>`.
    prepared: Vec<CString>,
    /// The latch, the postmaster's death and this connection's socket, kept for its life (a
    /// WaitLatchOrSocket per wait would make and close an epoll set: 5 more system calls per
    /// call); null until the first wait of a call.
    waits: *mut pg_sys::WaitEventSet,
    /// The socket events `waits` waits for now.
    waiting_for: u32,
    /// The socket's position in `waits`.
    socket_at: c_int,
}

/// A connection owned by the running call. Dropped without [`Wire::keep`] (an ERROR, an
/// interrupt, a failure), it cancels what may still run and closes the connection.
struct Wire {
    conn: Option<Conn>,
    /// Whether a statement may be running on it (a cancel is due when it is dropped).
    busy: bool,
}

impl Wire {
    fn raw(&self) -> *mut pq::PGconn {
        self.conn.as_ref().map_or(std::ptr::null_mut(), |c| c.conn)
    }

    /// Gives the connection back to the backend's cache (idle, its result read).
    fn keep(mut self) {
        if let Some(conn) = self.conn.take() {
            CACHE.with(|c| c.borrow_mut().push(conn));
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.busy {
            let mut buf = [0 as c_char; 256];
            // `conn.conn` is a live connection this frame owns (not in the cache); the
            // cancel handle is made, used and freed here; PQcancel writes at most 256 bytes.
            // No PostgreSQL call: safe while an ERROR unwinds.
            // SAFETY: a live connection this frame owns; no PostgreSQL call.
            unsafe {
                let cancel = pq::PQgetCancel(conn.conn);
                if !cancel.is_null() {
                    pq::PQcancel(cancel, buf.as_mut_ptr(), buf.len() as c_int);
                    pq::PQfreeCancel(cancel);
                }
            }
        }
        close(conn);
    }
}

/// Closes a connection that nothing else holds.
fn close(conn: Conn) {
    if !conn.waits.is_null() {
        // The set was made for this connection alone and nothing waits on it now;
        // FreeWaitEventSet closes its epoll descriptor and pfrees it (it raises nothing, so it
        // is safe while an ERROR unwinds).
        // SAFETY: this connection's own set, unused now; freeing it raises nothing.
        unsafe { pg_sys::FreeWaitEventSet(conn.waits) };
    }
    // SAFETY: the connection came from PQconnectStartParams and is owned by `conn` alone
    // (taken out of the cache or never put there); it is not used after PQfinish.
    unsafe { pq::PQfinish(conn.conn) };
}

thread_local! {
    /// The backend's idle connections.
    static CACHE: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
    /// Moves when server es_shards, a user mapping or a foreign data wrapper changes.
    static EPOCH: Cell<u64> = const { Cell::new(1) };
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// Whether the backend said that libpq could not be loaded ([`unavailable`]).
    static WARNED: Cell<bool> = const { Cell::new(false) };
    /// Notices the shard sent during the running call: (SQLSTATE, severity, message).
    static NOTICES: RefCell<Vec<(String, String, String)>> = const { RefCell::new(Vec::new()) };
}

/// A syscache callback: only notes the change (connections are closed at the next call, never
/// inside a callback, which may run in the middle of one).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn changed(_arg: Datum, _cache: i32, _hash: u32) {
    EPOCH.with(|e| e.set(e.get() + 1));
}

/// At backend exit: closes the cached connections (the shards see a clean end).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_exit(_code: c_int, _arg: Datum) {
    let all = CACHE.with(|c| std::mem::take(&mut *c.borrow_mut()));
    for conn in all {
        close(conn);
    }
}

/// Registers the callbacks once per backend, at its first wire call.
fn register() {
    if REGISTERED.with(Cell::get) {
        return;
    }
    // SAFETY: static callbacks registered once per backend (the flag); PostgreSQL keeps them
    // for the life of the process.
    unsafe {
        for cache in [
            pg_sys::SysCacheIdentifier::FOREIGNSERVEROID,
            pg_sys::SysCacheIdentifier::USERMAPPINGOID,
            pg_sys::SysCacheIdentifier::FOREIGNDATAWRAPPEROID,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(cache as c_int, Some(changed), Datum::from(0));
        }
        pg_sys::on_proc_exit(Some(at_exit), Datum::from(0));
    }
    REGISTERED.with(|r| r.set(true));
}

/// Collects a shard's notice for the running call (libpq calls it while reading).
unsafe extern "C" fn notice(_arg: *mut c_void, res: *const pq::PGresult) {
    // SAFETY: libpq passes a valid result for the duration of the call; the fields are copied.
    let (sqlstate, severity, message) = unsafe {
        (
            text(pq::PQresultErrorField(res, pq::DIAG_SQLSTATE)),
            text(pq::PQresultErrorField(res, pq::DIAG_SEVERITY)),
            text(pq::PQresultErrorField(res, pq::DIAG_MESSAGE_PRIMARY)),
        )
    };
    // no panic may cross libpq's frames: a busy cell drops the notice
    NOTICES.with(|n| {
        if let Ok(mut n) = n.try_borrow_mut() {
            n.push((
                sqlstate.unwrap_or_default(),
                severity.unwrap_or_default(),
                message.unwrap_or_default(),
            ));
        }
    });
}

/// A C string of libpq's as an owned string (`None` for NULL).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> Option<String> {
    // SAFETY: the caller's contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The options of a catalog tuple's text[] column `attr` (`name=value` strings).
///
/// # Safety
/// `tuple` is a valid syscache tuple of cache `cache`, held by the caller.
unsafe fn options(
    cache: pg_sys::SysCacheIdentifier::Type,
    tuple: pg_sys::HeapTuple,
    attr: u32,
) -> Vec<String> {
    let mut isnull = false;
    // SAFETY: the caller's contract; the array is copied into Rust strings.
    unsafe {
        let d = pg_sys::SysCacheGetAttr(
            cache as c_int,
            tuple,
            attr as pg_sys::AttrNumber,
            &mut isnull,
        );
        if isnull {
            Vec::new()
        } else {
            super::call::text_array_elements(d)
                .into_iter()
                .flatten()
                .collect()
        }
    }
}

/// Appends ` key='value'` to a connection string, quoted as PL/Proxy quotes it.
fn append_option(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(key);
    out.push_str("='");
    for ch in value.chars() {
        if ch == '\'' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('\'');
}

/// The connection string PL/Proxy would use for shard `shard` as user `user`, or `None` where
/// the cluster is left to the twin (options PL/Proxy applies itself, no such shard, no user
/// mapping). Raises PostgreSQL's 42501 when the user may not use the server, as PL/Proxy does.
fn connstr(shard: i32, user: Oid) -> Option<(String, Option<Duration>)> {
    // Syscache look-ups by name and by (user, server); the options are copied while
    // the tuples are held, then released; aclcheck_error raises (inside the caller's guard) and
    // does not return for a refusal.
    // SAFETY: tuples read only while held, then released; a refusal raises inside the guard.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::FOREIGNSERVERNAME as c_int,
            Datum::from(c"es_shards".as_ptr()),
        );
        if tuple.is_null() {
            return None;
        }
        let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_foreign_server>();
        let (server, fdw) = ((*form).oid, (*form).srvfdw);
        let server_options = options(
            pg_sys::SysCacheIdentifier::FOREIGNSERVERNAME,
            tuple,
            pg_sys::Anum_pg_foreign_server_srvoptions,
        );
        pg_sys::ReleaseSysCache(tuple);
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::FOREIGNDATAWRAPPEROID as c_int,
            Datum::from(fdw),
        );
        if tuple.is_null() {
            return None;
        }
        let fdw_options = options(
            pg_sys::SysCacheIdentifier::FOREIGNDATAWRAPPEROID,
            tuple,
            pg_sys::Anum_pg_foreign_data_wrapper_fdwoptions,
        );
        pg_sys::ReleaseSysCache(tuple);
        if !fdw_options.is_empty() {
            return None;
        }
        let key = format!("p{shard}=");
        let mut part = None;
        for option in &server_options {
            if let Some(value) = option.strip_prefix(&key) {
                part = Some(value.to_owned());
            } else if !is_partition(option) {
                return None;
            }
        }
        let part = part?;
        let allowed = super::compat::foreign_server_usage(server, user);
        if allowed != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                allowed,
                pg_sys::ObjectType::OBJECT_FOREIGN_SERVER,
                c"es_shards".as_ptr(),
            );
        }
        let timeout = connect_timeout(&part);
        if part.contains("user=") {
            return Some((part, timeout));
        }
        let mut tuple = pg_sys::SearchSysCache2(
            pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER as c_int,
            Datum::from(user),
            Datum::from(server),
        );
        if tuple.is_null() {
            tuple = pg_sys::SearchSysCache2(
                pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER as c_int,
                Datum::from(pg_sys::InvalidOid),
                Datum::from(server),
            );
        }
        if tuple.is_null() {
            return None;
        }
        let mapping = options(
            pg_sys::SysCacheIdentifier::USERMAPPINGUSERSERVER,
            tuple,
            pg_sys::Anum_pg_user_mapping_umoptions,
        );
        pg_sys::ReleaseSysCache(tuple);
        let mut extra = String::new();
        let mut got_user = false;
        for option in &mapping {
            let (k, v) = option.split_once('=').unwrap_or((option, ""));
            got_user |= k == "user";
            append_option(&mut extra, k, v);
        }
        if !got_user {
            let name = CStr::from_ptr(pg_sys::GetUserNameFromId(user, false));
            append_option(&mut extra, "user", &name.to_string_lossy());
        }
        Some((format!("{part} {extra}"), timeout))
    }
}

/// The number of shards of server `es_shards` (its options `p0`, `p1`, …, as `es.shard_count`
/// counts them), 0 without it.
pub(super) fn shard_count() -> i32 {
    // SAFETY: a syscache look-up by name; the options are copied into Rust strings while the
    // tuple is held, then it is released.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::FOREIGNSERVERNAME as c_int,
            Datum::from(c"es_shards".as_ptr()),
        );
        if tuple.is_null() {
            return 0;
        }
        let server_options = options(
            pg_sys::SysCacheIdentifier::FOREIGNSERVERNAME,
            tuple,
            pg_sys::Anum_pg_foreign_server_srvoptions,
        );
        pg_sys::ReleaseSysCache(tuple);
        server_options.iter().filter(|o| is_partition(o)).count() as i32
    }
}

/// Whether `option` is a partition's (`p<digits>=…`), as es.shard_count counts them.
fn is_partition(option: &str) -> bool {
    let b = option.as_bytes();
    let digits = b
        .strip_prefix(b"p")
        .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
    digits > 0 && b.get(1 + digits) == Some(&b'=')
}

/// libpq's `connect_timeout` of a connection string (which libpq leaves to the caller of
/// PQconnectPoll): at least 2 s, as libpq rounds it.
fn connect_timeout(connstr: &str) -> Option<Duration> {
    let at = connstr.find("connect_timeout")?;
    let rest = connstr[at + "connect_timeout".len()..].trim_start();
    let rest = rest
        .strip_prefix('=')?
        .trim_start()
        .trim_start_matches('\'');
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let secs: u64 = digits.parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs.max(2)))
}

/// Waits until `conn`'s socket is ready for `events` (or `deadline` passes: false), handling
/// interrupts (an ERROR from CHECK_FOR_INTERRUPTS unwinds the caller's [`Wire`], which
/// cancels and closes).
fn wait(conn: *mut pq::PGconn, events: u32, deadline: Option<Instant>) -> bool {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                left.as_millis().max(1) as std::ffi::c_long
            }
        };
        let mut flags = pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH | events;
        if deadline.is_some() {
            flags |= pg_sys::WL_TIMEOUT;
        }
        // Waits on this backend's own latch and the connection's socket (open: the
        // caller holds the connection); the latch is reset before the interrupt check, as
        // every latch loop in PostgreSQL does.
        // SAFETY: this backend's latch and the held connection's open socket.
        let rc = unsafe {
            let socket = pq::PQsocket(conn);
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                flags as c_int,
                socket,
                timeout,
                pg_sys::PG_WAIT_EXTENSION,
            )
        };
        if rc & pg_sys::WL_LATCH_SET as c_int != 0 {
            // SAFETY: this backend's latch.
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
            pgrx::check_for_interrupts!();
        }
        if rc & (pg_sys::WL_SOCKET_READABLE | pg_sys::WL_SOCKET_WRITEABLE) as c_int != 0 {
            return true;
        }
    }
}

/// Waits until the connected `conn`'s socket is ready for `events`, handling interrupts as
/// [`wait`] does, on the connection's own wait event set.
fn wait_on(conn: &mut Conn, events: u32) {
    // SAFETY: a live, connected connection owned by the caller's call.
    let socket = unsafe { pq::PQsocket(conn.conn) };
    if conn.waits.is_null() {
        let set = super::compat::long_lived_wait_event_set(3);
        // SAFETY: a new set with room for 3 events: the backend's latch, the postmaster's
        // death and the connection's open socket (its position kept in socket_at).
        unsafe {
            pg_sys::AddWaitEventToSet(
                set,
                pg_sys::WL_LATCH_SET,
                pg_sys::PGINVALID_SOCKET,
                pg_sys::MyLatch,
                std::ptr::null_mut(),
            );
            // as WaitLatchOrSocket: the postmaster's death only under a postmaster (a
            // single-user backend has none to watch)
            if pg_sys::IsUnderPostmaster {
                pg_sys::AddWaitEventToSet(
                    set,
                    pg_sys::WL_EXIT_ON_PM_DEATH,
                    pg_sys::PGINVALID_SOCKET,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
            conn.socket_at = pg_sys::AddWaitEventToSet(
                set,
                events,
                socket,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        conn.waits = set;
        conn.waiting_for = events;
    } else if conn.waiting_for != events {
        // SAFETY: the connection's set; socket_at is its socket's position.
        unsafe {
            pg_sys::ModifyWaitEvent(conn.waits, conn.socket_at, events, std::ptr::null_mut())
        };
        conn.waiting_for = events;
    }
    loop {
        let mut event = pg_sys::WaitEvent::default();
        // SAFETY: the connection's set (its socket is the one registered: a connection keeps
        // its socket once connected); one event written into `event`.
        let n = unsafe {
            pg_sys::WaitEventSetWait(conn.waits, -1, &mut event, 1, pg_sys::PG_WAIT_EXTENSION)
        };
        if n > 0 && event.events & pg_sys::WL_LATCH_SET != 0 {
            // SAFETY: this backend's latch.
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
            pgrx::check_for_interrupts!();
        }
        if n > 0 && event.events & (pg_sys::WL_SOCKET_READABLE | pg_sys::WL_SOCKET_WRITEABLE) != 0 {
            return;
        }
    }
}

/// PL/Proxy's form of a failure of `what` on `conn` (`undecorate` reads it back).
fn failure(label: &str, conn: *mut pq::PGconn, what: &str) -> RaisedError {
    // SAFETY: a live connection (the caller owns it); the strings are copied.
    let (db, message) = unsafe {
        (
            text(pq::PQdb(conn)).unwrap_or_default(),
            text(pq::PQerrorMessage(conn)).unwrap_or_default(),
        )
    };
    RaisedError {
        sqlstate: "XX000".into(),
        message: format!("PL/Proxy function {label}: [{db}] {what}: {message}"),
        detail: None,
        hint: None,
        context: None,
    }
}

/// Opens a connection to `shard` as `user` (not cached yet), or the failure.
fn open(
    shard: i32,
    user: Oid,
    epoch: u64,
    connstr: &str,
    timeout: Option<Duration>,
    label: &str,
) -> Result<Wire, RaisedError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let dbname = CString::new(connstr).unwrap_or_default();
    // SAFETY: the database's encoding name is a static string.
    let encoding = unsafe { pg_sys::GetDatabaseEncodingName() };
    let keys = [
        c"dbname".as_ptr(),
        c"client_encoding".as_ptr(),
        std::ptr::null(),
    ];
    let values = [dbname.as_ptr(), encoding, std::ptr::null()];
    // SAFETY: NULL-terminated arrays of NUL-terminated strings alive for the call (libpq
    // copies them); expand_dbname 1 reads the first value as a connection string.
    let raw = unsafe { pq::PQconnectStartParams(keys.as_ptr(), values.as_ptr(), 1) };
    if raw.is_null() {
        return Err(RaisedError {
            sqlstate: "53200".into(),
            message: "out of memory for a connection to a shard".into(),
            detail: None,
            hint: None,
            context: None,
        });
    }
    let wire = Wire {
        conn: Some(Conn {
            shard,
            user,
            epoch,
            conn: raw,
            prepared: Vec::new(),
            waits: std::ptr::null_mut(),
            waiting_for: 0,
            socket_at: 0,
        }),
        busy: false,
    };
    // SAFETY: a connection just started, owned by `wire`.
    if unsafe { pq::PQstatus(raw) } != pq::CONNECTION_OK {
        // PQconnectStart's own failures (a malformed string): CONNECTION_BAD at once
        // SAFETY: as above.
        let bad = unsafe { pq::PQconnectPoll(raw) } == pq::POLLING_FAILED;
        if bad {
            return Err(failure(label, raw, "PQconnectPoll"));
        }
    }
    loop {
        // SAFETY: the connection owned by `wire`, being set up.
        let state = unsafe { pq::PQconnectPoll(raw) };
        let ready = match state {
            pq::POLLING_OK => break,
            pq::POLLING_FAILED => return Err(failure(label, raw, "PQconnectPoll")),
            pq::POLLING_READING => wait(raw, pg_sys::WL_SOCKET_READABLE, deadline),
            pq::POLLING_WRITING => wait(raw, pg_sys::WL_SOCKET_WRITEABLE, deadline),
            _ => true,
        };
        if !ready {
            // PL/Proxy names the partition's string; this one may hold the mapping's password
            let mut e = failure(label, raw, "connect timeout to");
            e.message = format!(
                "PL/Proxy function {label}: [{}] connect timeout to: the shard",
                db_of(raw)
            );
            return Err(e);
        }
    }
    // SAFETY: the connected connection owned by `wire`; the notice receiver is a static
    // function that only copies into NOTICES and never panics or raises.
    unsafe {
        if pq::PQsetnonblocking(raw, 1) != 0 {
            return Err(failure(label, raw, "PQsetnonblocking"));
        }
        pq::PQsetNoticeReceiver(raw, Some(notice), std::ptr::null_mut());
    }
    Ok(wire)
}

/// The database name of a connection.
fn db_of(conn: *mut pq::PGconn) -> String {
    // SAFETY: a live connection; the name is copied.
    unsafe { text(pq::PQdb(conn)) }.unwrap_or_default()
}

/// A cached connection to `shard` for `user`, idle and good, or a new one.
fn take(shard: i32, user: Oid, label: &str) -> Result<Option<Wire>, RaisedError> {
    register();
    let epoch = EPOCH.with(Cell::get);
    let (found, stale) = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let stale: Vec<Conn> = {
            let (old, keep): (Vec<Conn>, Vec<Conn>) = std::mem::take(&mut *c)
                .into_iter()
                .partition(|k| k.epoch != epoch);
            *c = keep;
            old
        };
        let found = c
            .iter()
            .position(|k| k.shard == shard && k.user == user)
            .map(|i| c.swap_remove(i));
        (found, stale)
    });
    for conn in stale {
        close(conn);
    }
    if let Some(conn) = found {
        // SAFETY: a cached connection, now owned by this call.
        let good = unsafe {
            pq::PQstatus(conn.conn) == pq::CONNECTION_OK
                && pq::PQtransactionStatus(conn.conn) == pq::TRANS_IDLE
                && pq::PQisBusy(conn.conn) == 0
        };
        if good {
            return Ok(Some(Wire {
                conn: Some(conn),
                busy: false,
            }));
        }
        close(conn);
    }
    let Some((connstr, timeout)) = connstr(shard, user) else {
        return Ok(None);
    };
    open(shard, user, epoch, &connstr, timeout, label).map(Some)
}

/// Reads the results of the command sent on `wire` until libpq has none left: the last
/// TUPLES_OK/COMMAND_OK result, or the failure.
fn results(wire: &mut Wire, label: &str) -> Result<Option<Result_>, RaisedError> {
    let raw = wire.raw();
    let Some(conn) = wire.conn.as_mut() else {
        unreachable!("a taken wire holds its connection");
    };
    // flush what is queued (non-blocking), reading meanwhile so the server never stalls on us
    loop {
        // SAFETY: the connection owned by `wire`.
        let flushed = unsafe { pq::PQflush(raw) };
        match flushed {
            0 => break,
            1 => {
                wait_on(
                    conn,
                    pg_sys::WL_SOCKET_READABLE | pg_sys::WL_SOCKET_WRITEABLE,
                );
                // SAFETY: as above.
                if unsafe { pq::PQconsumeInput(raw) } == 0 {
                    return Err(failure(label, raw, "PQconsumeInput"));
                }
            }
            _ => return Err(failure(label, raw, "PQflush")),
        }
    }
    let mut last: Option<Result_> = None;
    let mut error: Option<RaisedError> = None;
    loop {
        // SAFETY: the connection owned by `wire`.
        while unsafe { pq::PQisBusy(raw) } != 0 {
            wait_on(conn, pg_sys::WL_SOCKET_READABLE);
            // SAFETY: as above.
            if unsafe { pq::PQconsumeInput(raw) } == 0 {
                return Err(failure(label, raw, "PQconsumeInput"));
            }
        }
        // SAFETY: as above; not busy, so this does not block.
        let res = unsafe { pq::PQgetResult(raw) };
        if res.is_null() {
            break;
        }
        let res = Result_(res);
        match res.status() {
            pq::TUPLES_OK | pq::COMMAND_OK => last = Some(res),
            pq::FATAL_ERROR => {
                if error.is_none() {
                    error = Some(res.remote_error(label, &db_of(raw)));
                }
            }
            _ => {
                if error.is_none() {
                    error = Some(failure(label, raw, "PQgetResult"));
                }
            }
        }
    }
    wire.busy = false;
    // SAFETY: the connection owned by `wire`.
    if unsafe { pq::PQstatus(raw) } != pq::CONNECTION_OK && error.is_none() {
        error = Some(failure(label, raw, "PQconsumeInput"));
    }
    match error {
        Some(e) => Err(e),
        None => Ok(last),
    }
}

/// A result of libpq's, cleared when dropped.
struct Result_(*mut pq::PGresult);

impl Drop for Result_ {
    fn drop(&mut self) {
        // SAFETY: a result PQgetResult returned, owned here alone.
        unsafe { pq::PQclear(self.0) };
    }
}

impl Result_ {
    fn status(&self) -> c_int {
        // SAFETY: a live result.
        unsafe { pq::PQresultStatus(self.0) }
    }

    fn field(&self, field: c_int) -> Option<String> {
        // SAFETY: a live result; the field is copied.
        unsafe { text(pq::PQresultErrorField(self.0, field)) }
    }

    /// The shard's error in PL/Proxy's form (`REMOTE <severity>: …`, `Remote detail: …`).
    fn remote_error(&self, label: &str, db: &str) -> RaisedError {
        let severity = self
            .field(pq::DIAG_SEVERITY)
            .or_else(|| self.field(pq::DIAG_SEVERITY_NONLOCALIZED))
            .unwrap_or_else(|| "ERROR".into());
        let message = self
            .field(pq::DIAG_MESSAGE_PRIMARY)
            // SAFETY: a live result; the message is copied.
            .or_else(|| unsafe { text(pq::PQresultErrorMessage(self.0)) })
            .unwrap_or_default();
        RaisedError {
            sqlstate: self
                .field(pq::DIAG_SQLSTATE)
                .unwrap_or_else(|| "XX000".into()),
            message: format!("{label}: [{db}] REMOTE {severity}: {message}"),
            detail: self
                .field(pq::DIAG_MESSAGE_DETAIL)
                .map(|d| format!("Remote detail: {d}")),
            hint: self
                .field(pq::DIAG_MESSAGE_HINT)
                .map(|h| format!("Remote hint: {h}")),
            context: None,
        }
    }
}

/// Sends the call of `fcinfo` (a relay's frame, arguments of `statement.types`) to `shard` as
/// a prepared statement and reads its one value.
///
/// # Safety
/// `fcinfo` is fmgr's valid frame of the relay whose statement `statement` is; its FmgrInfos
/// are alive (the relays' memory is not reset during a call).
pub unsafe fn call(shard: i32, statement: &Statement, fcinfo: pg_sys::FunctionCallInfo) -> Outcome {
    if let Err(why) = pq::load() {
        unavailable(why);
        return Outcome::Twin;
    }
    // SAFETY: the current user, a plain read.
    let user = unsafe { pg_sys::GetUserId() };
    let label = &statement.twin_label;
    let mut wire = match take(shard, user, label) {
        Ok(Some(w)) => w,
        Ok(None) => return Outcome::Twin,
        Err(e) => return Outcome::Failed(undecorate(e, Some(shard))),
    };
    NOTICES.with(|n| n.borrow_mut().clear());
    let outcome = (|| {
        let raw = wire.raw();
        let Some(conn) = wire.conn.as_mut() else {
            unreachable!("a taken wire holds its connection");
        };
        let index = match conn.prepared.iter().position(|s| s == &statement.sql) {
            Some(i) => i,
            None => {
                let name =
                    CString::new(format!("es_relay_{}", conn.prepared.len())).unwrap_or_default();
                // SAFETY: the connection owned by `wire`; the name, text and types are alive
                // for the call (libpq copies them into its output buffer).
                let sent = unsafe {
                    pq::PQsendPrepare(
                        raw,
                        name.as_ptr(),
                        statement.sql.as_ptr(),
                        statement.types.len() as c_int,
                        statement.types.as_ptr(),
                    )
                };
                if sent == 0 {
                    return Err(failure(label, raw, "PQsendPrepare"));
                }
                wire.busy = true;
                results(&mut wire, label)?;
                let Some(conn) = wire.conn.as_mut() else {
                    unreachable!("a taken wire holds its connection");
                };
                conn.prepared.push(statement.sql.clone());
                conn.prepared.len() - 1
            }
        };
        let name = CString::new(format!("es_relay_{index}")).unwrap_or_default();
        let n = statement.types.len();
        let mut values: Vec<*const c_char> = Vec::with_capacity(n);
        let mut lengths: Vec<c_int> = Vec::with_capacity(n);
        for (i, send) in statement.send.iter().enumerate() {
            // The caller's contract: the frame's i-th argument is of statement.types[i]
            // and `send` is that type's send function; SendFunctionCall returns a plain
            // (untoasted) bytea palloc'd in the call's memory context, alive until the call
            // returns, which is after libpq has copied it (PQsendQueryPrepared below).
            // SAFETY: a send function of the argument's own type; the bytea outlives libpq's copy.
            unsafe {
                let arg = *(*fcinfo).args.as_ptr().add(i);
                if arg.isnull {
                    values.push(std::ptr::null());
                    lengths.push(0);
                } else {
                    let bytes = pg_sys::SendFunctionCall(*send, arg.value);
                    let len = pgrx::varlena::varsize_any_exhdr(bytes.cast());
                    values.push(pgrx::varlena::vardata_any(bytes.cast()));
                    lengths.push(len as c_int);
                }
            }
        }
        let formats = vec![1 as c_int; n];
        // SAFETY: the connection owned by `wire`; n values with their lengths and formats,
        // alive for the call (libpq copies them into its output buffer).
        let sent = unsafe {
            pq::PQsendQueryPrepared(
                raw,
                name.as_ptr(),
                n as c_int,
                values.as_ptr(),
                lengths.as_ptr(),
                formats.as_ptr(),
                1,
            )
        };
        if sent == 0 {
            return Err(failure(label, raw, "PQsendQueryPrepared"));
        }
        wire.busy = true;
        let res = results(&mut wire, label)?;
        let Some(res) = res else {
            return Err(protocol(label, "no result"));
        };
        // SAFETY: a live result; its shape is checked before the value is read.
        unsafe {
            if pq::PQntuples(res.0) != 1
                || pq::PQnfields(res.0) != 1
                || pq::PQftype(res.0, 0) != statement.result
            {
                return Err(protocol(label, "a result of another shape"));
            }
            if pq::PQgetisnull(res.0, 0, 0) != 0 {
                return Ok((Datum::from(0), true));
            }
            let len = pq::PQgetlength(res.0, 0, 0);
            let data = pq::PQgetvalue(res.0, 0, 0);
            Ok((receive(statement, data, len), false))
        }
    })();
    let notices = NOTICES.with(|n| std::mem::take(&mut *n.borrow_mut()));
    match outcome {
        Ok((datum, isnull)) => {
            let db = db_of(wire.raw());
            wire.keep();
            emit(notices, label, &db);
            Outcome::Done(datum, isnull)
        }
        Err(e) => {
            // a shard's own ERROR leaves an idle connection; anything else is closed, and so is
            // one whose prepared statements no longer serve (a plan whose result type changed,
            // 0A000; a statement gone, 26000, e.g. a pooler's DISCARD ALL)
            let stale = matches!(e.sqlstate.as_str(), "0A000" | "26000");
            let idle = !stale
                && !wire.busy
                && !wire.raw().is_null()
                // SAFETY: a non-null connection owned by `wire` (checked just above).
                && unsafe {
                    pq::PQstatus(wire.raw()) == pq::CONNECTION_OK
                        && pq::PQtransactionStatus(wire.raw()) == pq::TRANS_IDLE
                };
            let db = db_of(wire.raw());
            if idle {
                wire.keep();
            } else {
                drop(wire);
            }
            emit(notices, label, &db);
            Outcome::Failed(undecorate(e, Some(shard)))
        }
    }
}

/// Says once per backend that libpq could not be loaded (the file and dlerror()): its routed
/// calls go through the PL/Proxy twins, as with `es.proxy_wire = off`. A WARNING, not an ERROR:
/// sharding works without the wire.
fn unavailable(why: &str) {
    if WARNED.with(|w| w.replace(true)) {
        return;
    }
    pgrx::ereport!(
        WARNING,
        pgrx::PgSqlErrorCode::ERRCODE_WARNING,
        format!("event_store: libpq could not be loaded: {why}"),
        "Routed calls go through the PL/Proxy functions es_proxy.* instead of the proxy's own wire; install libpq 5 (Debian: libpq5) or set es.proxy_wire = off."
    );
}

/// The binary value `data` (`len` bytes) of the result type, read by its receive function.
///
/// # Safety
/// `data` points at `len` readable bytes; the statement's FmgrInfos are alive.
unsafe fn receive(statement: &Statement, data: *const c_char, len: c_int) -> Datum {
    // The caller's contract; the StringInfo is palloc'd in the call's memory context
    // with the trailing NUL receive functions rely on; ReceiveFunctionCall checks that the
    // whole buffer was read (an ERROR otherwise) and returns a datum in the same context.
    // SAFETY: a palloc'd NUL-terminated buffer for the type's own receive function.
    unsafe {
        let buf = pg_sys::makeStringInfo();
        pg_sys::appendBinaryStringInfo(buf, data.cast(), len);
        pg_sys::ReceiveFunctionCall(statement.recv, buf, statement.recv_param, -1)
    }
}

/// A reply that does not fit what was sent.
fn protocol(label: &str, what: &str) -> RaisedError {
    RaisedError {
        sqlstate: "08P01".into(),
        message: format!("{label}: the shard sent {what}"),
        detail: None,
        hint: None,
        context: None,
    }
}

/// Passes the shard's notices on as PL/Proxy does: NOTICE for a SQLSTATE of class 00, else
/// WARNING, with its decoration.
fn emit(notices: Vec<(String, String, String)>, label: &str, db: &str) {
    for (sqlstate, severity, message) in notices {
        let text = format!("{label}: [{db}] REMOTE {severity}: {message}");
        if sqlstate.starts_with("00") {
            pgrx::notice!("{text}");
        } else {
            pgrx::warning!("{text}");
        }
    }
}
