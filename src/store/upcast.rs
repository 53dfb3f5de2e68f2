//! Upcasting (docs/accounts-and-aggregates.md "Upcasting"): an event stored with an older `event_version` is handed out
//! and folded as the chain of its type's upcasters makes it, one version at a time
//! (`es.define_upcaster(event_type, from_version, upcast)`); the stored row never changes.
//!
//! Every path that hands events out or folds them asks [`Upcasting::load`] first: `None` when
//! no upcaster is declared (a lookup in the backend's registry cache, nothing more), so the
//! read paths cost what they cost without the feature. An upcaster is the user's code: it runs
//! as the role that declared it, inside the caller's [`crate::pg::udf::guarded`] or
//! [`crate::pg::udf::isolated`] unit.

use crate::pg::backend::Memory;
use crate::pg::call::{RowType, RowValues};
use crate::pg::jsonb::Jsonb;
use crate::pg::registry::{self, Upcasters};
use crate::pg::spi::Connection;
use crate::pg::udf::{self, OpenError, UserFn};
use event_store_core::{EventStoreError, JsonField};

use std::collections::HashMap;

/// The declared upcasters, and the ones opened so far for this statement.
pub struct Upcasting {
    chains: std::rc::Rc<Upcasters>,
    opened: HashMap<u32, UserFn>,
    /// Where the upcasters are opened: the context current at `load` (a row's context is
    /// reset after each row).
    memory: Memory,
}

impl Upcasting {
    /// The upcasters, `None` when there are none; they are opened in the current memory
    /// context, which must outlive the use (`conn`'s, for a call that keeps `conn` open).
    pub fn load(conn: &Connection) -> Option<Upcasting> {
        Upcasting::load_in(conn, Memory::current())
    }

    fn load_in(conn: &Connection, memory: Memory) -> Option<Upcasting> {
        registry::any_upcaster(conn).then(|| Upcasting {
            chains: registry::all_upcasters(conn),
            opened: HashMap::new(),
            memory,
        })
    }

    /// Whether this backend knows, without asking the catalogs, that no upcaster is declared
    /// (the registry is loaded and current): then [`Upcasting::load_unconnected`] is `None`.
    pub fn known_none() -> bool {
        registry::known_no_upcaster()
    }

    /// [`Upcasting::load`] for a call that has no SPI connection of its own (a read, the
    /// `es.replay` aggregate): the upcasters are opened in the context current now, not in the
    /// short connection's; it connects only when the registry must be read again, so a read
    /// without upcasters costs no more.
    pub fn load_unconnected() -> Option<Upcasting> {
        if registry::known_no_upcaster() {
            return None;
        }
        // the context current now, before SPI_connect replaces it
        let memory = Memory::current();
        let conn = Connection::connect();
        Upcasting::load_in(&conn, memory)
    }

    /// `event` (an event object, as `es.events.data` holds it) at its type's newest version:
    /// `None` when no upcaster applies, else the upcast object (in the current memory context)
    /// and its version.
    pub fn apply<'a>(
        &mut self,
        json: Jsonb<'a>,
    ) -> Result<Option<(Jsonb<'a>, i32)>, EventStoreError> {
        let JsonField::String(event_type) = json.get(c"type") else {
            return Ok(None);
        };
        let Some(chain) = self.chains.get(event_type) else {
            return Ok(None);
        };
        let mut version = match json.get(c"event_version") {
            JsonField::Integer(v) => i32::try_from(v).unwrap_or(i32::MAX),
            _ => 1,
        };
        if !chain.contains_key(&version) {
            return Ok(None);
        }
        let event_type = event_type.to_owned();
        let mut current = json;
        while let Some(up) = chain.get(&version).copied() {
            let failed = |reason: String, raised: Option<String>| EventStoreError::UpcastFailed {
                reason: format!(
                    "upcaster {} of {event_type} version {version} {reason}",
                    udf::function_name(up.upcast)
                ),
                raised,
            };
            let upcast = match self.opened.entry(up.upcast.to_u32()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let f = self.memory.run(|| UserFn::open(up.upcast, 1, up.definer));
                    let f = f.map_err(|e| match e {
                        OpenError::Missing => {
                            failed("no longer exists (it was dropped or renamed)".into(), None)
                        }
                        OpenError::NotAllowed => {
                            failed("may not be executed by its definer".into(), None)
                        }
                    })?;
                    e.insert(f)
                }
            };
            let next = match upcast.call_jsonb(&[current]) {
                Err(raised) if udf::passes_through(&raised.sqlstate) => {
                    return Err(EventStoreError::Raised(raised));
                }
                Err(raised) => {
                    return Err(failed(
                        "raised an error".into(),
                        Some(format!("{}: {}", raised.sqlstate, raised.message)),
                    ));
                }
                Ok(None) => return Err(failed("returned NULL".into(), None)),
                Ok(Some(d)) => d,
            };
            let shape = next.shape();
            if !matches!(shape, JsonField::Object) {
                return Err(failed(
                    format!("returned {}, not a JSON object", udf::shape_name(&shape)),
                    None,
                ));
            }
            current = next;
            version += 1;
        }
        Ok(Some((current, version)))
    }

    /// Upcasts a row of `es.events` in place (`data` and `event_version`, at the given
    /// 0-based attribute positions).
    pub fn apply_to_row(
        &mut self,
        row: &mut RowValues<'_>,
        at: RowColumns,
    ) -> Result<(), EventStoreError> {
        if let Some(version) = row.replace_jsonb(at.data, |data| self.apply(data))? {
            row.set_i32(at.event_version, version);
        }
        Ok(())
    }
}

/// Where `data` and `event_version` are in a row of `es.events` (0-based attribute numbers).
#[derive(Debug, Clone, Copy)]
pub struct RowColumns {
    /// `data`.
    pub data: usize,
    /// `event_version`.
    pub event_version: usize,
}

impl RowColumns {
    /// The positions in a row type of `es.events`' shape (`None` when it has no such columns).
    pub fn of(row: RowType<'_>) -> Option<RowColumns> {
        Some(RowColumns {
            data: row.attribute(c"data")?,
            event_version: row.attribute(c"event_version")?,
        })
    }
}
