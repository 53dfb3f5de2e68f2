//! The seed's bank account (docs/reference.md §5) as pure Rust: its events, its state, the transition
//! function that replay folds with, and the business rules that commands check.
//!
//! The SQL layer reads an event's keys from binary jsonb into an [`EventView`] and keeps
//! the fold's state in the aggregate's memory context; everything decided about an account is
//! decided here, so replay, commands and the append path cannot disagree.

use crate::event::JsonField;

/// The state of an account as docs/reference.md §5 shows it: `{"holder_name", "balance_cents", "status",
/// "version"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// The holder's name (from `Opened`).
    pub holder_name: String,
    /// Balance in integer cents.
    pub balance_cents: i64,
    /// Lifecycle status.
    pub status: AccountStatus,
    /// Number of events applied (the stream version the state reflects).
    pub version: i64,
    /// Whether `Opened` has been applied.
    pub opened: bool,
}

impl Default for AccountState {
    fn default() -> Self {
        Self {
            holder_name: String::new(),
            balance_cents: 0,
            status: AccountStatus::Active,
            version: 0,
            opened: false,
        }
    }
}

/// The seed's `AccountStatus`, named in the state JSON as `"Active"`, `"Frozen"`, `"Closed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AccountStatus {
    /// Deposits and withdrawals allowed.
    Active,
    /// Frozen: no deposits or withdrawals.
    Frozen,
    /// Closed: no deposits or withdrawals.
    Closed,
}

impl std::fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AccountStatus {
    /// The name in the state JSON (and in the store's messages and DETAILs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Frozen => "Frozen",
            Self::Closed => "Closed",
        }
    }

    /// Parses the name in a state JSON.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Active" => Some(Self::Active),
            "Frozen" => Some(Self::Frozen),
            "Closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// The keys of an account event that replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    /// The element itself (must be an object).
    pub shape: JsonField<'a>,
    /// `"type"`.
    pub event_type: JsonField<'a>,
    /// `"account_holder"` (Opened).
    pub account_holder: JsonField<'a>,
    /// `"initial_balance_cents"` (Opened).
    pub initial_balance_cents: JsonField<'a>,
    /// `"amount_cents"` (Deposited, Withdrawn).
    pub amount_cents: JsonField<'a>,
}

/// One event, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `Opened{account_holder, initial_balance_cents}`.
    Opened {
        /// The holder's name.
        account_holder: &'a str,
        /// Opening balance, ≥ 0.
        initial_balance_cents: i64,
    },
    /// `Deposited{amount_cents, description}`.
    Deposited {
        /// Amount, > 0.
        amount_cents: i64,
    },
    /// `Withdrawn{amount_cents, description}`.
    Withdrawn {
        /// Amount, > 0.
        amount_cents: i64,
    },
    /// `Frozen{reason}`.
    Frozen,
    /// `Closed{reason}`.
    Closed,
    /// The store's `$stream_deleted` marker (docs/reference.md §14): judged by the account's rule (only an
    /// empty account is deleted), folded as a step of the version only.
    StreamDeleted,
    /// The store's `$stream_undeleted` marker: a step of the version only.
    StreamUndeleted,
}

/// Why an event could not be applied: the type (as found) and the reason. Raised as ES003
/// ([`crate::EventStoreError::UnreplayableEvent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    /// The event's `"type"`, or a description of what was there instead.
    pub event_type: String,
    /// What is wrong.
    pub reason: String,
}

impl<'a> EventView<'a> {
    /// Decodes and checks the shape of one account event.
    pub fn decode(&self) -> Result<Event<'a>, ReplayError> {
        let event_type = match self.event_type {
            JsonField::String(t) if self.shape == JsonField::Object => t,
            other => {
                let found = if self.shape == JsonField::Object {
                    other.kind()
                } else {
                    self.shape.kind()
                };
                return Err(ReplayError {
                    event_type: found.to_owned(),
                    reason: "an account event is a JSON object with a string \"type\"".into(),
                });
            }
        };
        let fail = |reason: String| ReplayError {
            event_type: event_type.to_owned(),
            reason,
        };
        let cents = |field: JsonField<'_>, name: &str| -> Result<i64, ReplayError> {
            match field {
                JsonField::Integer(v) => Ok(v),
                JsonField::Number(n) => Err(fail(format!(
                    "\"{name}\" must be an integer number of cents, got {n}"
                ))),
                JsonField::Absent => Err(fail(format!("\"{name}\" is missing"))),
                other => Err(fail(format!(
                    "\"{name}\" must be an integer, got {}",
                    other.kind()
                ))),
            }
        };
        match event_type {
            "Opened" => {
                let account_holder = match self.account_holder {
                    JsonField::String(h) => h,
                    JsonField::Absent => return Err(fail("\"account_holder\" is missing".into())),
                    other => {
                        return Err(fail(format!(
                            "\"account_holder\" must be a string, got {}",
                            other.kind()
                        )));
                    }
                };
                let initial_balance_cents =
                    cents(self.initial_balance_cents, "initial_balance_cents")?;
                Ok(Event::Opened {
                    account_holder,
                    initial_balance_cents,
                })
            }
            "Deposited" => Ok(Event::Deposited {
                amount_cents: cents(self.amount_cents, "amount_cents")?,
            }),
            "Withdrawn" => Ok(Event::Withdrawn {
                amount_cents: cents(self.amount_cents, "amount_cents")?,
            }),
            "Frozen" => Ok(Event::Frozen),
            "Closed" => Ok(Event::Closed),
            crate::lifecycle::STREAM_DELETED => Ok(Event::StreamDeleted),
            crate::lifecycle::STREAM_UNDELETED => Ok(Event::StreamUndeleted),
            other => Err(ReplayError {
                event_type: if other.is_empty() {
                    "\"\"".to_owned()
                } else {
                    other.to_owned()
                },
                reason: "not an account event (Opened, Deposited, Withdrawn, Frozen, Closed)"
                    .into(),
            }),
        }
    }
}

impl AccountState {
    /// Applies one stored event: the seed's `apply_event`, plus the checks that keep a replay
    /// honest (an account opens once, first; balances never overflow). Business rules are not
    /// re-judged here: stored events are facts, checked when they were appended.
    pub fn apply(&mut self, event: &Event<'_>) -> Result<(), ReplayError> {
        let name = event_name(event);
        let fail = |reason: &str| ReplayError {
            event_type: name.into(),
            reason: reason.into(),
        };
        match *event {
            // The store's markers change nothing but the version the state reflects.
            Event::StreamDeleted | Event::StreamUndeleted => {}
            Event::Opened {
                account_holder,
                initial_balance_cents,
            } => {
                if self.opened {
                    return Err(fail("the account is already open"));
                }
                self.opened = true;
                self.holder_name = account_holder.to_owned();
                self.balance_cents = initial_balance_cents;
                self.status = AccountStatus::Active;
            }
            _ if !self.opened => return Err(fail("an account stream starts with Opened")),
            Event::Deposited { amount_cents } => {
                self.balance_cents = self
                    .balance_cents
                    .checked_add(amount_cents)
                    .ok_or_else(|| fail("the balance overflows a bigint"))?;
            }
            Event::Withdrawn { amount_cents } => {
                self.balance_cents = self
                    .balance_cents
                    .checked_sub(amount_cents)
                    .ok_or_else(|| fail("the balance overflows a bigint"))?;
            }
            Event::Frozen => self.status = AccountStatus::Frozen,
            Event::Closed => self.status = AccountStatus::Closed,
        }
        self.version = self
            .version
            .checked_add(1)
            .ok_or_else(|| fail("the version overflows a bigint"))?;
        Ok(())
    }

    /// Whether this is a state a history of account events can reach: opened (version ≥ 1) and
    /// never below zero (no withdrawal exceeds the balance, no opening balance is negative). A
    /// state read from JSON (a snapshot, an `initial_state`) is refused with the reason when it
    /// is not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.version < 1 {
            return Err("\"version\" must be at least 1 (an account's state starts with Opened)");
        }
        if self.balance_cents < 0 {
            return Err(
                "\"balance_cents\" must not be negative (no withdrawal exceeds the balance)",
            );
        }
        Ok(())
    }
}

/// A command on an account (docs/reference.md §5), checked against the current state by [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `es.deposit`.
    Deposit {
        /// Amount in cents.
        amount_cents: i64,
    },
    /// `es.withdraw`.
    Withdraw {
        /// Amount in cents.
        amount_cents: i64,
    },
    /// `es.freeze_account`.
    Freeze,
    /// `es.close_account`.
    Close,
}

/// Why a command is refused by the account's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleViolation {
    /// ES103: an amount (or opening balance) out of range.
    InvalidAmount {
        /// The amount given.
        amount_cents: i64,
    },
    /// ES102: the account is not Active (for deposit/withdraw/freeze) or already Closed.
    NotActive {
        /// Its status.
        status: AccountStatus,
    },
    /// ES101: a withdrawal larger than the balance.
    InsufficientFunds {
        /// The balance.
        available: i64,
        /// The amount asked for.
        requested: i64,
    },
    /// ES105: deleting an account that still holds money (or owes it).
    NonZeroBalance {
        /// The balance.
        balance: i64,
    },
    /// ES103: a deposit that would take the balance past the largest bigint.
    BalanceOverflow {
        /// The balance.
        balance: i64,
        /// The amount deposited.
        amount_cents: i64,
    },
}

/// The seed's rules: amounts > 0; deposits, withdrawals (and freezing) only while Active; a
/// withdrawal never exceeds the balance; closing a closed account is refused.
pub fn decide(state: &AccountState, command: Command) -> Result<(), RuleViolation> {
    match command {
        Command::Deposit { amount_cents } | Command::Withdraw { amount_cents }
            if amount_cents <= 0 =>
        {
            Err(RuleViolation::InvalidAmount { amount_cents })
        }
        Command::Deposit { .. } | Command::Withdraw { .. } | Command::Freeze
            if state.status != AccountStatus::Active =>
        {
            Err(RuleViolation::NotActive {
                status: state.status,
            })
        }
        Command::Withdraw { amount_cents } if amount_cents > state.balance_cents => {
            Err(RuleViolation::InsufficientFunds {
                available: state.balance_cents,
                requested: amount_cents,
            })
        }
        Command::Deposit { amount_cents }
            if state.balance_cents.checked_add(amount_cents).is_none() =>
        {
            Err(RuleViolation::BalanceOverflow {
                balance: state.balance_cents,
                amount_cents,
            })
        }
        Command::Close if state.status == AccountStatus::Closed => Err(RuleViolation::NotActive {
            status: state.status,
        }),
        _ => Ok(()),
    }
}

/// The seed's `Account::open` rule: the opening balance is not negative.
pub fn check_opening(initial_balance_cents: i64) -> Result<(), RuleViolation> {
    if initial_balance_cents < 0 {
        Err(RuleViolation::InvalidAmount {
            amount_cents: initial_balance_cents,
        })
    } else {
        Ok(())
    }
}

/// Whether appending up to `new_version` from `old_version` reaches or crosses a multiple of
/// `interval` (0 = snapshots off). The seed's `version % 100 == 0` misses a batch that jumps
/// over a multiple; this does not.
pub fn snapshot_due(old_version: i64, new_version: i64, interval: i64) -> bool {
    interval > 0 && new_version > old_version && new_version / interval > old_version / interval
}

/// Why the append path refuses an event for an account stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A business rule (ES101, ES102, ES103).
    Rule(RuleViolation),
    /// Not a well-formed account fact, or not one that can follow the history (ES003).
    Malformed(ReplayError),
}

/// The append path's check of one event against the state before it: the same rules as the
/// commands (so `es.append_events` cannot store what `es.withdraw` would refuse), and an account
/// opens once, first. The caller applies the event when this passes.
pub fn admit(state: &AccountState, event: &Event<'_>) -> Result<(), Refusal> {
    let malformed = |reason: &str| {
        Refusal::Malformed(ReplayError {
            event_type: event_name(event).into(),
            reason: reason.into(),
        })
    };
    let command = match *event {
        Event::Opened {
            initial_balance_cents,
            ..
        } => {
            if state.opened {
                return Err(malformed("the account is already open"));
            }
            return check_opening(initial_balance_cents).map_err(Refusal::Rule);
        }
        _ if !state.opened => return Err(malformed("an account stream starts with Opened")),
        // Deleting an account is a rule of the account: only an empty one goes.
        Event::StreamDeleted if state.balance_cents != 0 => {
            return Err(Refusal::Rule(RuleViolation::NonZeroBalance {
                balance: state.balance_cents,
            }));
        }
        Event::StreamDeleted | Event::StreamUndeleted => return Ok(()),
        Event::Deposited { amount_cents } => Command::Deposit { amount_cents },
        Event::Withdrawn { amount_cents } => Command::Withdraw { amount_cents },
        Event::Frozen => Command::Freeze,
        Event::Closed => Command::Close,
    };
    decide(state, command).map_err(Refusal::Rule)
}

/// The key of an event's free text (the seed's `description` or `reason`), which the append
/// path requires as a string because the seed's serde types require it.
pub fn text_key(event_type: &str) -> Option<&'static std::ffi::CStr> {
    match event_type {
        "Deposited" | "Withdrawn" => Some(c"description"),
        "Frozen" | "Closed" => Some(c"reason"),
        _ => None,
    }
}

/// Checks the free-text field found under [`text_key`].
pub fn check_text(event_type: &str, key: &str, value: JsonField<'_>) -> Result<(), ReplayError> {
    match value {
        JsonField::String(_) => Ok(()),
        JsonField::Absent => Err(ReplayError {
            event_type: event_type.into(),
            reason: format!("\"{key}\" is missing"),
        }),
        other => Err(ReplayError {
            event_type: event_type.into(),
            reason: format!("\"{key}\" must be a string, got {}", other.kind()),
        }),
    }
}

/// The `"type"` of an event.
pub fn event_name(event: &Event<'_>) -> &'static str {
    match event {
        Event::Opened { .. } => "Opened",
        Event::Deposited { .. } => "Deposited",
        Event::Withdrawn { .. } => "Withdrawn",
        Event::Frozen => "Frozen",
        Event::Closed => "Closed",
        Event::StreamDeleted => crate::lifecycle::STREAM_DELETED,
        Event::StreamUndeleted => crate::lifecycle::STREAM_UNDELETED,
    }
}

impl AccountState {
    /// The state JSON of docs/reference.md §5 as pairs, for the extension's jsonb builder.
    pub fn pairs(&self) -> crate::shape::Pairs {
        use crate::shape::Scalar;
        vec![
            ("holder_name", Scalar::Text(self.holder_name.clone())),
            ("balance_cents", Scalar::Int(self.balance_cents)),
            ("status", Scalar::Text(self.status.as_str().to_owned())),
            ("version", Scalar::Int(self.version)),
        ]
    }

    /// The state JSON of docs/reference.md §5, keys in a fixed order (the holder's name JSON-escaped).
    pub fn to_json(&self) -> String {
        let holder = serde_json::Value::String(self.holder_name.clone());
        format!(
            "{{\"holder_name\": {holder}, \"balance_cents\": {}, \"status\": \"{}\", \"version\": {}}}",
            self.balance_cents,
            self.status.as_str(),
            self.version
        )
    }
}

impl From<ReplayError> for crate::EventStoreError {
    fn from(e: ReplayError) -> Self {
        crate::EventStoreError::UnreplayableEvent {
            event_type: e.event_type,
            reason: e.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opened(holder: &str, initial: i64) -> Event<'_> {
        Event::Opened {
            account_holder: holder,
            initial_balance_cents: initial,
        }
    }

    fn replay<'a>(
        start: AccountState,
        events: impl IntoIterator<Item = &'a Event<'a>>,
    ) -> AccountState {
        let mut s = start;
        for e in events {
            s.apply(e).unwrap();
        }
        s
    }

    #[test]
    fn markers_step_the_version_and_only_an_empty_account_is_deleted() {
        let mut s = replay(AccountState::default(), &[opened("Alice", 300)]);
        assert_eq!(
            admit(&s, &Event::StreamDeleted),
            Err(Refusal::Rule(RuleViolation::NonZeroBalance {
                balance: 300
            }))
        );
        s.apply(&Event::Withdrawn { amount_cents: 300 }).unwrap();
        assert_eq!(admit(&s, &Event::StreamDeleted), Ok(()));
        assert_eq!(admit(&s, &Event::StreamUndeleted), Ok(()));
        let before = s.clone();
        s.apply(&Event::StreamDeleted).unwrap();
        s.apply(&Event::StreamUndeleted).unwrap();
        assert_eq!(s.version, before.version + 2);
        assert_eq!(
            (s.balance_cents, s.status, &s.holder_name),
            (before.balance_cents, before.status, &before.holder_name)
        );
        assert_eq!(event_name(&Event::StreamDeleted), "$stream_deleted");
        assert_eq!(event_name(&Event::StreamUndeleted), "$stream_undeleted");
    }

    #[test]
    fn the_seed_story_replays_to_1000() {
        // Opened 0, +500, -200, +700 (the guide's table), then a freeze.
        let events = [
            opened("Alice", 0),
            Event::Deposited { amount_cents: 500 },
            Event::Withdrawn { amount_cents: 200 },
            Event::Deposited { amount_cents: 700 },
            Event::Frozen,
        ];
        let s = replay(AccountState::default(), &events);
        assert_eq!(s.balance_cents, 1000);
        assert_eq!(s.status, AccountStatus::Frozen);
        assert_eq!(s.version, 5);
        assert_eq!(
            s.to_json(),
            r#"{"holder_name": "Alice", "balance_cents": 1000, "status": "Frozen", "version": 5}"#
        );
    }

    #[test]
    fn replay_refuses_histories_that_are_not_accounts() {
        let mut s = AccountState::default();
        let err = s.apply(&Event::Deposited { amount_cents: 5 }).unwrap_err();
        assert_eq!(err.event_type, "Deposited");
        assert_eq!(err.reason, "an account stream starts with Opened");
        s.apply(&opened("A", 0)).unwrap();
        assert_eq!(
            s.apply(&opened("B", 0)).unwrap_err().reason,
            "the account is already open"
        );
    }

    #[test]
    fn decode_names_the_type_and_the_reason() {
        let view = |t, amount| EventView {
            shape: JsonField::Object,
            event_type: t,
            account_holder: JsonField::Absent,
            initial_balance_cents: JsonField::Absent,
            amount_cents: amount,
        };
        let e = view(JsonField::String("Teleported"), JsonField::Absent)
            .decode()
            .unwrap_err();
        assert_eq!(e.event_type, "Teleported");
        assert!(e.reason.starts_with("not an account event"));
        let e = view(JsonField::String("Deposited"), JsonField::String("5"))
            .decode()
            .unwrap_err();
        assert_eq!(
            e.reason,
            "\"amount_cents\" must be an integer, got a string"
        );
        let e = view(
            JsonField::String("Withdrawn"),
            JsonField::Number(crate::event::NumberText::new("2.5")),
        )
        .decode()
        .unwrap_err();
        assert_eq!(
            e.reason,
            "\"amount_cents\" must be an integer number of cents, got 2.5"
        );
        let e = view(JsonField::String("Opened"), JsonField::Absent)
            .decode()
            .unwrap_err();
        assert_eq!(e.reason, "\"account_holder\" is missing");
        let e = view(
            JsonField::Number(crate::event::NumberText::new("1")),
            JsonField::Absent,
        )
        .decode()
        .unwrap_err();
        assert_eq!(e.event_type, "a number");
        assert_eq!(
            view(JsonField::String("Deposited"), JsonField::Integer(700))
                .decode()
                .unwrap(),
            Event::Deposited { amount_cents: 700 }
        );
    }

    #[test]
    fn holder_names_are_json_escaped() {
        let s = AccountState {
            holder_name: "Bob \"the\" \\ builder".into(),
            ..AccountState::default()
        };
        assert!(s.to_json().contains(r#""Bob \"the\" \\ builder""#));
    }

    fn arb_tail() -> impl Strategy<Value = Vec<Event<'static>>> {
        prop::collection::vec(
            prop_oneof![
                (1i64..1_000_000).prop_map(|a| Event::Deposited { amount_cents: a }),
                (1i64..1_000_000).prop_map(|a| Event::Withdrawn { amount_cents: a }),
                Just(Event::Frozen),
            ],
            0..200,
        )
    }

    #[test]
    fn the_seed_rules() {
        let active = AccountState {
            balance_cents: 300,
            opened: true,
            ..AccountState::default()
        };
        assert_eq!(
            decide(&active, Command::Withdraw { amount_cents: 0 }),
            Err(RuleViolation::InvalidAmount { amount_cents: 0 })
        );
        assert_eq!(
            decide(&active, Command::Deposit { amount_cents: -5 }),
            Err(RuleViolation::InvalidAmount { amount_cents: -5 })
        );
        assert_eq!(
            decide(&active, Command::Withdraw { amount_cents: 301 }),
            Err(RuleViolation::InsufficientFunds {
                available: 300,
                requested: 301
            })
        );
        assert_eq!(
            decide(&active, Command::Withdraw { amount_cents: 300 }),
            Ok(())
        );
        let frozen = AccountState {
            status: AccountStatus::Frozen,
            ..active.clone()
        };
        assert_eq!(
            decide(&frozen, Command::Deposit { amount_cents: 1 }),
            Err(RuleViolation::NotActive {
                status: AccountStatus::Frozen
            })
        );
        assert_eq!(decide(&frozen, Command::Close), Ok(()));
        let closed = AccountState {
            status: AccountStatus::Closed,
            ..active
        };
        assert!(decide(&closed, Command::Close).is_err());
        assert!(check_opening(-1).is_err());
        assert!(check_opening(0).is_ok());
    }

    #[test]
    fn the_append_path_admits_what_the_commands_would() {
        let fresh = AccountState::default();
        assert!(admit(&fresh, &opened("A", 0)).is_ok());
        assert_eq!(
            admit(&fresh, &opened("A", -1)),
            Err(Refusal::Rule(RuleViolation::InvalidAmount {
                amount_cents: -1
            }))
        );
        assert!(matches!(
            admit(&fresh, &Event::Deposited { amount_cents: 5 }),
            Err(Refusal::Malformed(e)) if e.reason == "an account stream starts with Opened"
        ));
        let mut s = fresh;
        s.apply(&opened("A", 100)).unwrap();
        assert!(matches!(
            admit(&s, &opened("A", 0)),
            Err(Refusal::Malformed(_))
        ));
        assert_eq!(
            admit(&s, &Event::Withdrawn { amount_cents: 101 }),
            Err(Refusal::Rule(RuleViolation::InsufficientFunds {
                available: 100,
                requested: 101
            }))
        );
        assert!(admit(&s, &Event::Withdrawn { amount_cents: 100 }).is_ok());
        assert_eq!(text_key("Deposited"), Some(c"description"));
        assert_eq!(text_key("Closed"), Some(c"reason"));
        assert_eq!(text_key("Opened"), None);
        assert_eq!(
            check_text("Frozen", "reason", JsonField::Integer(1))
                .unwrap_err()
                .reason,
            "\"reason\" must be a string, got a number"
        );
    }

    #[test]
    fn snapshots_are_due_when_a_multiple_is_reached_or_crossed() {
        assert!(snapshot_due(99, 100, 100));
        assert!(snapshot_due(98, 103, 100)); // the seed's `% 100 == 0` misses this batch
        assert!(!snapshot_due(100, 199, 100));
        assert!(snapshot_due(150, 420, 100));
        assert!(!snapshot_due(1, 100, 0));
    }

    fn arb_any_event() -> impl Strategy<Value = Event<'static>> {
        prop_oneof![
            (-5i64..1_000).prop_map(|a| Event::Deposited { amount_cents: a }),
            (-5i64..1_000).prop_map(|a| Event::Withdrawn { amount_cents: a }),
            (-5i64..1_000).prop_map(|a| opened("X", a)),
            Just(Event::Frozen),
            Just(Event::Closed),
        ]
    }

    proptest! {
        /// For random histories, replaying everything equals replaying the tail from the state
        /// at any version k, and the balance is the arithmetic sum of the events.
        #[test]
        fn snapshot_plus_tail_equals_full_replay(
            initial in 0i64..1_000_000,
            tail in arb_tail(),
            k_seed in any::<prop::sample::Index>(),
        ) {
            let mut events = vec![opened("Prop", initial)];
            events.extend(tail);
            let full = replay(AccountState::default(), &events);
            let k = k_seed.index(events.len() + 1);
            let at_k = replay(AccountState::default(), &events[..k]);
            let resumed = replay(at_k, &events[k..]);
            prop_assert_eq!(&full, &resumed);
            let sum: i64 = events.iter().map(|e| match e {
                Event::Opened { initial_balance_cents, .. } => *initial_balance_cents,
                Event::Deposited { amount_cents } => *amount_cents,
                Event::Withdrawn { amount_cents } => -*amount_cents,
                _ => 0,
            }).sum();
            prop_assert_eq!(full.balance_cents, sum);
            prop_assert_eq!(full.version, events.len() as i64);
        }

        /// Whatever a client tries to append, what the append path admits never overdraws,
        /// never moves money on an inactive account, and always replays.
        #[test]
        fn admitted_histories_keep_the_rules(attempts in prop::collection::vec(arb_any_event(), 0..100)) {
            let mut state = AccountState::default();
            for event in &attempts {
                let before = state.status;
                if admit(&state, event).is_ok() {
                    state.apply(event).unwrap();
                    prop_assert!(state.balance_cents >= 0);
                    if matches!(event, Event::Deposited { .. } | Event::Withdrawn { .. }) {
                        prop_assert_eq!(before, AccountStatus::Active);
                    }
                }
            }
        }
    }
}
