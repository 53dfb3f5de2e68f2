//! `es.account_replay`, the aggregate that folds account events into the state of docs/reference.md §5 (also
//! as a window function, and from a snapshot's state): its steps over an [`AccountState`] that
//! the aggregate keeps in its memory context between rows, never serialized. The fold itself is
//! the core's ([`AccountState::apply`]), the same one the commands and time travel use.

use super::account_json::AccountJson;
use crate::pg::jsonb::Jsonb;
use event_store_core::EventStoreError;
use event_store_core::account::{AccountState, ReplayError};

/// Applies one event (`None`: a NULL event, which is not an account event).
pub fn step(state: &mut AccountState, event: Option<Jsonb<'_>>) -> Result<(), EventStoreError> {
    let Some(event) = event else {
        return Err(ReplayError {
            event_type: "null".into(),
            reason: "an account event cannot be NULL".into(),
        }
        .into());
    };
    let decoded = event.account_event().decode()?;
    state.apply(&decoded)?;
    Ok(())
}

/// The state a fold from `initial` (a state JSON, e.g. a snapshot's) starts with; 22023 with
/// what is wrong when it is not a state an account history reaches.
pub fn start_from(initial: Option<Jsonb<'_>>) -> Result<AccountState, EventStoreError> {
    let Some(initial) = initial else {
        return Ok(AccountState::default());
    };
    initial
        .account_state()
        .map_err(|reason| EventStoreError::InvalidArgument {
            name: "initial_state",
            reason: format!(
                "{reason} (expected {{\"holder_name\", \"balance_cents\", \"status\", \"version\"}})"
            ),
        })
}
