//! What an account's JSON means: the keys of an account event the fold reads, and an account
//! state (a snapshot's or a stream row's) read back, over the generic binary jsonb reader of
//! `pg::jsonb` (which knows keys, numbers and strings, not accounts).

use crate::pg::jsonb::Jsonb;
use event_store_core::JsonField;
use event_store_core::account::{AccountState, AccountStatus, EventView};
use std::ffi::CStr;

/// An account's JSON read natively (no parse into a tree, no copy of the value).
pub trait AccountJson<'a> {
    /// The keys of an account event that the fold reads: only those its type needs (replay
    /// reads one amount per event, not four lookups).
    fn account_event(&self) -> EventView<'a>;

    /// An account state JSON (`{"holder_name", "balance_cents", "status", "version"}`, a
    /// snapshot's or a stream row's), or what is wrong with it: its shape, or a state no account
    /// history reaches.
    fn account_state(&self) -> Result<AccountState, &'static str>;
}

impl<'a> AccountJson<'a> for Jsonb<'a> {
    fn account_event(&self) -> EventView<'a> {
        let shape = self.shape();
        if shape != JsonField::Object {
            return EventView {
                shape,
                event_type: JsonField::Absent,
                account_holder: JsonField::Absent,
                initial_balance_cents: JsonField::Absent,
                amount_cents: JsonField::Absent,
            };
        }
        let event_type = self.get(c"type");
        let get_if = |wanted: bool, key: &CStr| {
            if wanted {
                self.get(key)
            } else {
                JsonField::Absent
            }
        };
        let (opened, money) = match event_type {
            JsonField::String("Opened") => (true, false),
            JsonField::String("Deposited" | "Withdrawn") => (false, true),
            _ => (false, false),
        };
        EventView {
            shape,
            event_type,
            account_holder: get_if(opened, c"account_holder"),
            initial_balance_cents: get_if(opened, c"initial_balance_cents"),
            amount_cents: get_if(money, c"amount_cents"),
        }
    }

    fn account_state(&self) -> Result<AccountState, &'static str> {
        if self.shape() != JsonField::Object {
            return Err("not an object");
        }
        let int = |key: &CStr| match self.get(key) {
            JsonField::Integer(v) => Some(v),
            _ => None,
        };
        let balance = int(c"balance_cents").ok_or("\"balance_cents\" must be an integer")?;
        let version = int(c"version").ok_or("\"version\" must be an integer")?;
        let status = match self.get(c"status") {
            JsonField::String(s) => AccountStatus::parse(s),
            _ => None,
        }
        .ok_or("\"status\" must be Active, Frozen or Closed")?;
        let holder = match self.get(c"holder_name") {
            JsonField::String(s) => s,
            _ => return Err("\"holder_name\" must be a string"),
        };
        let account = AccountState {
            holder_name: holder.to_owned(),
            balance_cents: balance,
            status,
            version,
            opened: true,
        };
        account.check()?;
        Ok(account)
    }
}
