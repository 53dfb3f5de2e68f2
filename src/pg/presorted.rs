//! `es.presorted_replay`: a replay in SQL, `es.account_replay(data ORDER BY version) FROM
//! es.events WHERE stream_id = $1` (docs/reference.md §5; `es.replay` of a declared type the
//! same), folds the stream's events without sorting them when the index already gives them in
//! version order.
//!
//! PostgreSQL 15's executor sorts the input of every ordered aggregate itself (a tuple sort of
//! the event and its version, which spills to disk past `work_mem`), even when the scan below
//! yields the rows in that order; its planner does not know that an ordered index scan would
//! spare the sort, so for a stream that is a large part of `es.events` it picks a sequential
//! scan. PostgreSQL 16 and later plan ordered aggregates with presorted input themselves
//! (`enable_presorted_aggregate`), so the hook exists on 15 only; the setting is defined on
//! every version so a session's `SET` means the same everywhere (a no-op on 16+).
//!
//! The hook chains the previous `planner_hook` and changes a finished plan only where the
//! order is provably redundant: a plain aggregate (no grouping) whose every ordered or
//! distinct aggregate is one of the store's replays, `ORDER BY version` ascending (`int8 <`)
//! and nothing else, directly over a forward index scan of `es.events`' unique
//! `(stream_id, version)` index with an equality on `stream_id` (all rows of one stream, in
//! version order). Such an aggregate becomes exactly what the planner makes of the unordered
//! call: no `aggorder`, and no resjunk sort-key argument (the executor passes every argument of
//! an unordered aggregate to its transition function, whose argument array has room for the
//! real arguments only). Where the planner chose a sequential or bitmap scan instead, the
//! query is planned a second time with those scans disabled, and the index plan is kept when
//! its cost is below the first plan's plus the sort it would have done (what 16's planner
//! weighs). Every other plan is left as it was.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `es.presorted_replay` (default on): the hook's switch (docs/configuration.md).
pub static PRESORTED_REPLAY: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Defines the setting and, on PostgreSQL 15, installs the planner hook. Call once, from
/// `_PG_init`, before `settings::init` reserves the `es` prefix (which drops every `es.*`
/// setting not yet defined, e.g. one from postgresql.conf or the command line).
pub fn install() {
    GucRegistry::define_bool_guc(
        c"es.presorted_replay",
        c"Lets es.account_replay(data ORDER BY version) over one stream skip the executor's sort (PostgreSQL 15).",
        c"On PostgreSQL 15 the store's planner hook drops the ordering of a replay aggregate whose input is a forward scan of the (stream_id, version) index of one stream, and plans such a replay with that index when it is cheaper than scanning and sorting. PostgreSQL 16 and later do this themselves (enable_presorted_aggregate); there the setting changes nothing.",
        &PRESORTED_REPLAY,
        GucContext::Userset,
        GucFlags::default(),
    );
    #[cfg(feature = "pg15")]
    hook::install();
}

#[cfg(feature = "pg15")]
mod hook {
    use super::PRESORTED_REPLAY;
    use pgrx::pg_sys::{self, Node, NodeTag};
    use std::ffi::{CStr, c_char, c_int};
    use std::sync::OnceLock;

    /// The hook installed before ours, called in its place.
    static PREV: OnceLock<pg_sys::planner_hook_type> = OnceLock::new();

    /// `pg_aggregate.aggkind` of a plain aggregate.
    const AGGKIND_NORMAL: c_char = b'n' as c_char;

    /// The store's aggregates whose ordering the hook may drop (all in schema `es`, every arity:
    /// each folds one stream's events in version order, docs/reference.md §5 and §13).
    const REPLAYS: [&CStr; 2] = [c"account_replay", c"replay"];

    /// Installs the hook. Call once per process, from `_PG_init`.
    pub fn install() {
        // SAFETY: _PG_init runs once per process before any query, so reading and replacing
        // the hook variable cannot race; the previous hook is kept and called by ours.
        unsafe {
            let _ = PREV.set(pg_sys::planner_hook);
            pg_sys::planner_hook = Some(plan);
        }
    }

    unsafe extern "C-unwind" {
        /// PostgreSQL's `standard_planner`, bound without pgrx's error guard: an ERROR while
        /// planning (a cancel, a user's function evaluated at plan time) must reach
        /// PostgreSQL's handler unchanged, with its own SQLSTATE.
        #[link_name = "standard_planner"]
        fn standard_planner_unguarded(
            parse: *mut pg_sys::Query,
            query_string: *const c_char,
            cursor_options: c_int,
            bound_params: pg_sys::ParamListInfo,
        ) -> *mut pg_sys::PlannedStmt;
    }

    /// The hook. Like the utility hook, it has no value with a destructor and no pgrx guard of
    /// its own: an ERROR raised by the planner jumps over it to PostgreSQL's handler unchanged;
    /// what it does itself runs in guarded functions.
    unsafe extern "C-unwind" fn plan(
        parse: *mut pg_sys::Query,
        query_string: *const c_char,
        cursor_options: c_int,
        bound_params: pg_sys::ParamListInfo,
    ) -> *mut pg_sys::PlannedStmt {
        let next = PREV
            .get()
            .copied()
            .flatten()
            .unwrap_or(standard_planner_unguarded);
        // SAFETY: parse is the Query PostgreSQL passed us, read before the planner changes it.
        let copy = unsafe { candidate(parse) };
        // SAFETY: the arguments PostgreSQL passed us, handed on unchanged, as every planner
        // hook does.
        let first = unsafe { next(parse, query_string, cursor_options, bound_params) };
        if copy.is_null() {
            return first;
        }
        // SAFETY: first is the finished plan of this query, ours to change until we return it.
        let with_sort = unsafe { rewrite(first) };
        if with_sort.is_nan() {
            return first;
        }
        // The second plan, with the index: the settings are restored by AtEOXact_GUC below,
        // or by the abort of the (sub)transaction if planning raises an ERROR.
        // SAFETY: a GUC nest level opened and closed around the call, as fmgr does for a
        // function's SET clause.
        let nest = unsafe { index_paths_only() };
        // SAFETY: a copy of the Query made before the first planning changed it.
        let second = unsafe { next(copy, query_string, cursor_options, bound_params) };
        // SAFETY: the nest level opened above, closed once.
        unsafe { restore_settings(nest) };
        // SAFETY: second is the finished plan of the same query, ours until we return it.
        if unsafe { adopt(second, with_sort) } {
            second
        } else {
            first
        }
    }

    /// A copy of `parse` when the hook may want to plan it a second time (a plain aggregate
    /// over `es.events` alone), null otherwise.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn candidate(parse: *mut pg_sys::Query) -> *mut pg_sys::Query {
        // SAFETY: parse is a valid Query (the planner's argument); only its own fields and
        // its range table's first entry are read.
        unsafe {
            let q = &*parse;
            if !PRESORTED_REPLAY.get()
                || q.commandType != pg_sys::CmdType::CMD_SELECT
                || !q.utilityStmt.is_null()
                || !q.hasAggs
                || q.hasWindowFuncs
                || q.hasTargetSRFs
                || q.hasSubLinks
                || q.hasForUpdate
                || q.hasModifyingCTE
                || !q.groupClause.is_null()
                || !q.groupingSets.is_null()
                || !q.setOperations.is_null()
                || !q.cteList.is_null()
                || pg_sys::list_length(q.rtable) != 1
            {
                return std::ptr::null_mut();
            }
            let rte = pg_sys::list_nth(q.rtable, 0).cast::<pg_sys::RangeTblEntry>();
            match events() {
                Some(ev)
                    if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                        && (*rte).relid == ev.rel =>
                {
                    pg_sys::copyObjectImpl(parse.cast()).cast()
                }
                _ => std::ptr::null_mut(),
            }
        }
    }

    /// What the hook needs to know of `es.events`.
    #[derive(Clone, Copy)]
    struct Events {
        rel: pg_sys::Oid,
        namespace: pg_sys::Oid,
        stream_id: i16,
        version: i16,
    }

    /// `es.events` and its two key columns, `None` without the store in this database.
    ///
    /// # Safety
    /// Inside a transaction (syscache look-ups).
    unsafe fn events() -> Option<Events> {
        // SAFETY: the caller's contract; the look-ups return InvalidOid / 0 when missing.
        unsafe {
            let namespace = pg_sys::get_namespace_oid(c"es".as_ptr(), true);
            if namespace == pg_sys::InvalidOid {
                return None;
            }
            let rel = pg_sys::get_relname_relid(c"events".as_ptr(), namespace);
            if rel == pg_sys::InvalidOid {
                return None;
            }
            let stream_id = pg_sys::get_attnum(rel, c"stream_id".as_ptr());
            let version = pg_sys::get_attnum(rel, c"version".as_ptr());
            (stream_id > 0 && version > 0).then_some(Events {
                rel,
                namespace,
                stream_id,
                version,
            })
        }
    }

    /// What [`agg`] found.
    enum Verdict {
        /// Nothing to do (not the shape, or already without ordering).
        Untouched,
        /// The ordering was dropped.
        Rewritten,
        /// The shape, but not over the index: the aggregate's cost plus the sort the executor
        /// will do.
        WantsIndex(f64),
    }

    /// Drops the redundant orderings in `stmt`'s aggregates; returns the cost a plan with the
    /// index must beat when the top aggregate is a replay over another scan of `es.events`,
    /// NaN when nothing more is to be done.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn rewrite(stmt: *mut pg_sys::PlannedStmt) -> f64 {
        // SAFETY: stmt is a finished plan; the walk follows its node tags.
        unsafe {
            let Some(ev) = events() else {
                return f64::NAN;
            };
            let top = match agg((*stmt).planTree, stmt, ev) {
                Verdict::WantsIndex(cost) => cost,
                _ => f64::NAN,
            };
            walk_rest(stmt, ev);
            top
        }
    }

    /// Visits the aggregates of `stmt` below its top node (which the caller did) and in its
    /// subplans.
    ///
    /// # Safety
    /// `stmt` is a finished plan.
    unsafe fn walk_rest(stmt: *mut pg_sys::PlannedStmt, ev: Events) {
        // SAFETY: the caller's contract: the plan tree and the subplans are plan nodes or null.
        unsafe {
            walk((*stmt).planTree, stmt, ev, true);
            for i in 0..pg_sys::list_length((*stmt).subplans) {
                walk(
                    pg_sys::list_nth((*stmt).subplans, i).cast(),
                    stmt,
                    ev,
                    false,
                );
            }
        }
    }

    /// Visits the aggregates of a plan tree (the top one done by the caller when `skip_top`).
    ///
    /// # Safety
    /// `plan` is null or a node of `stmt`'s plan.
    unsafe fn walk(
        plan: *mut pg_sys::Plan,
        stmt: *mut pg_sys::PlannedStmt,
        ev: Events,
        skip_top: bool,
    ) {
        if plan.is_null() {
            return;
        }
        // SAFETY: the caller's contract; child pointers of a plan node are plan nodes or null.
        unsafe {
            if !skip_top {
                agg(plan, stmt, ev);
            }
            walk((*plan).lefttree, stmt, ev, false);
            walk((*plan).righttree, stmt, ev, false);
            let children = match (*plan).type_ {
                NodeTag::T_Append => (*plan.cast::<pg_sys::Append>()).appendplans,
                NodeTag::T_MergeAppend => (*plan.cast::<pg_sys::MergeAppend>()).mergeplans,
                NodeTag::T_SubqueryScan => {
                    walk(
                        (*plan.cast::<pg_sys::SubqueryScan>()).subplan,
                        stmt,
                        ev,
                        false,
                    );
                    std::ptr::null_mut()
                }
                _ => std::ptr::null_mut(),
            };
            for i in 0..pg_sys::list_length(children) {
                walk(pg_sys::list_nth(children, i).cast(), stmt, ev, false);
            }
        }
    }

    /// One plan node: when it is a plain aggregate of the shape the module's header describes,
    /// over the index, its replays lose their ordering.
    ///
    /// # Safety
    /// `plan` is null or a node of `stmt`'s plan.
    unsafe fn agg(plan: *mut pg_sys::Plan, stmt: *mut pg_sys::PlannedStmt, ev: Events) -> Verdict {
        // SAFETY: the caller's contract; each node is read as the struct its tag names.
        unsafe {
            if plan.is_null() || (*plan).type_ != NodeTag::T_Agg {
                return Verdict::Untouched;
            }
            let a = &*plan.cast::<pg_sys::Agg>();
            if a.aggstrategy != pg_sys::AggStrategy::AGG_PLAIN
                || a.aggsplit != pg_sys::AggSplit::AGGSPLIT_SIMPLE
                || a.numCols != 0
                || !a.groupingSets.is_null()
                || !a.chain.is_null()
            {
                return Verdict::Untouched;
            }
            let mut aggrefs = Vec::new();
            if !collect_list(a.plan.targetlist, &mut aggrefs)
                || !collect_list(a.plan.qual, &mut aggrefs)
            {
                return Verdict::Untouched;
            }
            // every ordered (or distinct) aggregate must be a replay ordered by version
            let mut keys = Vec::new();
            for &aggref in &aggrefs {
                let r = &*aggref;
                if r.aggorder.is_null() && r.aggdistinct.is_null() {
                    continue;
                }
                match sort_key(r, ev) {
                    Some(k) => keys.push((aggref, k)),
                    None => return Verdict::Untouched,
                }
            }
            if keys.is_empty() {
                return Verdict::Untouched;
            }
            let child = a.plan.lefttree;
            if !ordered_scan(child, stmt, ev) {
                return Verdict::WantsIndex(a.plan.total_cost + sort_cost(child));
            }
            // the sort key must be the version column the index scan returns
            let tlist = (*child).targetlist;
            for &(_, k) in &keys {
                if k < 1 || k as c_int > pg_sys::list_length(tlist) {
                    return Verdict::Untouched;
                }
                let tle = pg_sys::list_nth(tlist, k as c_int - 1).cast::<pg_sys::TargetEntry>();
                let expr = (*tle).expr.cast::<Node>();
                if expr.is_null() || (*expr).type_ != NodeTag::T_Var {
                    return Verdict::Untouched;
                }
                let var = &*expr.cast::<pg_sys::Var>();
                if var.varno != (*child.cast::<pg_sys::Scan>()).scanrelid as c_int
                    || var.varattno != ev.version
                    || var.varlevelsup != 0
                {
                    return Verdict::Untouched;
                }
            }
            for &(aggref, _) in &keys {
                let r = &mut *aggref;
                let n = pg_sys::list_length(r.args);
                // the resjunk sort key is the last argument (checked by sort_key)
                r.args = pg_sys::list_truncate(pg_sys::list_copy(r.args), n - 1);
                r.aggorder = std::ptr::null_mut();
            }
            Verdict::Rewritten
        }
    }

    /// Collects the Aggrefs of a list of expressions (or target entries); false when it meets
    /// a node it does not know (then nothing is changed).
    ///
    /// # Safety
    /// `list` is null or a List of expression nodes of a plan.
    unsafe fn collect_list(list: *mut pg_sys::List, out: &mut Vec<*mut pg_sys::Aggref>) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            (0..pg_sys::list_length(list)).all(|i| collect(pg_sys::list_nth(list, i).cast(), out))
        }
    }

    /// See [`collect_list`].
    ///
    /// # Safety
    /// `node` is null or an expression node of a plan.
    unsafe fn collect(node: *mut Node, out: &mut Vec<*mut pg_sys::Aggref>) -> bool {
        if node.is_null() {
            return true;
        }
        // SAFETY: the caller's contract; each node is read as the struct its tag names.
        unsafe {
            match (*node).type_ {
                NodeTag::T_TargetEntry => {
                    collect((*node.cast::<pg_sys::TargetEntry>()).expr.cast(), out)
                }
                NodeTag::T_Aggref => {
                    out.push(node.cast());
                    true
                }
                NodeTag::T_OpExpr => collect_list((*node.cast::<pg_sys::OpExpr>()).args, out),
                NodeTag::T_FuncExpr => collect_list((*node.cast::<pg_sys::FuncExpr>()).args, out),
                NodeTag::T_RelabelType => {
                    collect((*node.cast::<pg_sys::RelabelType>()).arg.cast(), out)
                }
                NodeTag::T_CoerceViaIO => {
                    collect((*node.cast::<pg_sys::CoerceViaIO>()).arg.cast(), out)
                }
                NodeTag::T_Var | NodeTag::T_Const | NodeTag::T_Param => true,
                _ => false,
            }
        }
    }

    /// When `r` is one of the store's replays, ordered by one ascending `int8 <` key and
    /// nothing else, that key is its last, resjunk argument, a column of the child's output:
    /// that column's number there.
    ///
    /// # Safety
    /// `r` is an Aggref of a finished plan (its arguments reference the child's output).
    unsafe fn sort_key(r: &pg_sys::Aggref, ev: Events) -> Option<i16> {
        // SAFETY: the caller's contract; list elements are the node types the planner puts
        // there (SortGroupClause in aggorder, TargetEntry in args), tags checked where read.
        unsafe {
            if r.aggkind != AGGKIND_NORMAL
                || r.agglevelsup != 0
                || r.aggsplit != pg_sys::AggSplit::AGGSPLIT_SIMPLE
                || !r.aggdistinct.is_null()
                || !r.aggfilter.is_null()
                || r.aggstar
                || !r.aggdirectargs.is_null()
                || pg_sys::list_length(r.aggorder) != 1
                || pg_sys::get_func_namespace(r.aggfnoid) != ev.namespace
            {
                return None;
            }
            let name = pg_sys::get_func_name(r.aggfnoid);
            if name.is_null() || !REPLAYS.contains(&CStr::from_ptr(name)) {
                return None;
            }
            let sgc = pg_sys::list_nth(r.aggorder, 0).cast::<pg_sys::SortGroupClause>();
            if (*sgc).type_ != NodeTag::T_SortGroupClause
                || (*sgc).sortop != pg_sys::Oid::from(pg_sys::Int8LessOperator)
                || (*sgc).nulls_first
                || (*sgc).tleSortGroupRef == 0
            {
                return None;
            }
            let n = pg_sys::list_length(r.args);
            // the real arguments, then the sort key: n - 1 of them must be what the aggregate takes
            if n < 2 || pg_sys::list_length(r.aggargtypes) != n - 1 {
                return None;
            }
            for i in 0..n {
                let tle = pg_sys::list_nth(r.args, i).cast::<pg_sys::TargetEntry>();
                if (*tle).xpr.type_ != NodeTag::T_TargetEntry {
                    return None;
                }
                let is_key = (*tle).ressortgroupref == (*sgc).tleSortGroupRef;
                if (i == n - 1) != is_key || (*tle).resjunk != is_key {
                    return None;
                }
            }
            let key = pg_sys::list_nth(r.args, n - 1).cast::<pg_sys::TargetEntry>();
            let expr = (*key).expr.cast::<Node>();
            if expr.is_null() || (*expr).type_ != NodeTag::T_Var {
                return None;
            }
            let var = &*expr.cast::<pg_sys::Var>();
            (var.varno == pg_sys::OUTER_VAR
                && var.varlevelsup == 0
                && var.vartype == pg_sys::INT8OID)
                .then_some(var.varattno)
        }
    }

    /// Whether `plan` returns the rows of one stream of `es.events` in ascending version order:
    /// a forward scan of the unique btree index on `(stream_id, version)` whose conditions are
    /// all comparisons of those columns by the index's operators, one of them an equality on
    /// `stream_id` (no `= ANY`, no row comparison).
    ///
    /// # Safety
    /// `plan` is null or a node of `stmt`'s plan, made in this transaction (its index locked).
    unsafe fn ordered_scan(
        plan: *mut pg_sys::Plan,
        stmt: *mut pg_sys::PlannedStmt,
        ev: Events,
    ) -> bool {
        // SAFETY: the caller's contract; the index is locked by the planning that chose it, so
        // opening it with NoLock is safe and its relcache entry valid until index_close.
        unsafe {
            if plan.is_null() || (*plan).type_ != NodeTag::T_IndexScan {
                return false;
            }
            let scan = &*plan.cast::<pg_sys::IndexScan>();
            let relid = scan.scan.scanrelid;
            if scan.indexorderdir != pg_sys::ScanDirection::ForwardScanDirection
                || !scan.indexorderby.is_null()
                || relid < 1
                || relid as c_int > pg_sys::list_length((*stmt).rtable)
            {
                return false;
            }
            let rte = pg_sys::list_nth((*stmt).rtable, relid as c_int - 1)
                .cast::<pg_sys::RangeTblEntry>();
            if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION || (*rte).relid != ev.rel {
                return false;
            }
            let index = pg_sys::index_open(scan.indexid, pg_sys::NoLock as pg_sys::LOCKMODE);
            let form = &*(*index).rd_index;
            let keys = form.indkey.values.as_slice(form.indnatts as usize);
            let ok = form.indrelid == ev.rel
                && form.indisunique
                && form.indnkeyatts == 2
                && (*(*index).rd_rel).relam == pg_sys::BTREE_AM_OID
                && keys[0] == ev.stream_id
                && keys[1] == ev.version
                && *(*index).rd_indoption.add(1) as u32
                    & (pg_sys::INDOPTION_DESC | pg_sys::INDOPTION_NULLS_FIRST)
                    == 0
                && *(*index).rd_opfamily.add(1) == pg_sys::INTEGER_BTREE_FAM_OID
                && *(*index).rd_opcintype.add(1) == pg_sys::INT8OID;
            // the families of the two key columns (read only when the index has them)
            let families = ok.then(|| [*(*index).rd_opfamily, *(*index).rd_opfamily.add(1)]);
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
            families.is_some_and(|f| quals(scan.indexqualorig, relid as c_int, ev, f))
        }
    }

    /// Whether every index condition compares `stream_id` or `version` (of range-table entry
    /// `relid`) by an operator of its column's operator family, with an equality on
    /// `stream_id` among them.
    ///
    /// # Safety
    /// `list` is the `indexqualorig` of an index scan of a finished plan.
    unsafe fn quals(
        list: *mut pg_sys::List,
        relid: c_int,
        ev: Events,
        families: [pg_sys::Oid; 2],
    ) -> bool {
        let mut stream_equality = false;
        // SAFETY: the caller's contract; each node is read as the struct its tag names.
        unsafe {
            for i in 0..pg_sys::list_length(list) {
                let node = pg_sys::list_nth(list, i).cast::<Node>();
                if node.is_null() || (*node).type_ != NodeTag::T_OpExpr {
                    return false;
                }
                let op = &*node.cast::<pg_sys::OpExpr>();
                if pg_sys::list_length(op.args) != 2 {
                    return false;
                }
                let column = (0..2).find_map(|j| {
                    let arg = pg_sys::list_nth(op.args, j).cast::<Node>();
                    if arg.is_null() || (*arg).type_ != NodeTag::T_Var {
                        return None;
                    }
                    let var = &*arg.cast::<pg_sys::Var>();
                    (var.varno == relid && var.varlevelsup == 0).then_some(var.varattno)
                });
                let strategy = |family| pg_sys::get_op_opfamily_strategy(op.opno, family);
                match column {
                    Some(c) if c == ev.stream_id => match strategy(families[0]) {
                        3 => stream_equality = true, // BTEqualStrategyNumber
                        0 => return false,
                        _ => {}
                    },
                    Some(c) if c == ev.version && strategy(families[1]) != 0 => {}
                    _ => return false,
                }
            }
        }
        stream_equality
    }

    /// The cost the planner gives a sort of `plan`'s rows in `work_mem` (what the executor
    /// does for an ordered aggregate over them).
    ///
    /// # Safety
    /// `plan` is null or a plan node.
    unsafe fn sort_cost(plan: *mut pg_sys::Plan) -> f64 {
        if plan.is_null() {
            return 0.0;
        }
        let mut path = pg_sys::Path::default();
        // SAFETY: cost_sort only writes the path's costs and rows (PlannerInfo unused on 15).
        unsafe {
            pg_sys::cost_sort(
                &mut path,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0.0,
                (*plan).plan_rows.max(1.0),
                (*plan).plan_width,
                0.0,
                pg_sys::work_mem,
                -1.0,
            );
        }
        path.total_cost
    }

    /// Disables sequential and bitmap scans for the second planning; returns the GUC nest level
    /// to close.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn index_paths_only() -> c_int {
        // SAFETY: a new nest level, the settings saved in it (GUC_ACTION_SAVE), as fmgr does
        // for a function's SET clause; a transaction abort restores them too.
        unsafe {
            let nest = pg_sys::NewGUCNestLevel();
            for name in [c"enable_seqscan", c"enable_bitmapscan"] {
                pg_sys::set_config_option(
                    name.as_ptr(),
                    c"off".as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    0,
                    false,
                );
            }
            nest
        }
    }

    /// Restores the settings [`index_paths_only`] changed.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn restore_settings(nest: c_int) {
        // SAFETY: the nest level index_paths_only opened, closed once.
        unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    }

    /// Whether the second plan is the replay over the index and cheaper than `with_sort`; its
    /// ordering is dropped when it is.
    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn adopt(stmt: *mut pg_sys::PlannedStmt, with_sort: f64) -> bool {
        // SAFETY: stmt is a finished plan.
        unsafe {
            let top = (*stmt).planTree;
            if top.is_null() || (*top).total_cost > with_sort {
                return false;
            }
            let Some(ev) = events() else {
                return false;
            };
            if !matches!(agg(top, stmt, ev), Verdict::Rewritten) {
                return false;
            }
            walk_rest(stmt, ev);
            true
        }
    }
}
