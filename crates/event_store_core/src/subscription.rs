//! Subscriptions (docs/reference.md §9) as pure decisions: which partition a stream belongs to, what a valid
//! subscription is, who may move a partition's checkpoint, how many partitions a consumer may
//! claim, and when a failing event is parked. The extension stores the state; these functions
//! decide, so every rule is tested here without a server.

use crate::EventStoreError;

/// Largest number of partitions of a subscription: each one is a checkpoint row and, for
/// competing consumers, a lease; more than this is a configuration mistake, not a need.
pub const MAX_PARTITIONS: i32 = 1024;

/// The stable hash of a stream id that chooses its partition (`es.stream_hash`): 32-bit FNV-1a
/// over the uuid's 16 bytes in network order, with the top bit cleared so it is a non-negative
/// `integer` in SQL. It is defined here, not by PostgreSQL's hash functions, so it is the same
/// on every node, architecture and version: partitions, shards and checkpoints agree.
pub fn stream_hash(stream_id: &[u8; 16]) -> i32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let h = stream_id
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME));
    (h & 0x7fff_ffff) as i32
}

/// The partition of `stream_id` in a subscription of `partitions` partitions.
pub fn partition_of(stream_id: &[u8; 16], partitions: i32) -> i32 {
    stream_hash(stream_id) % partitions.max(1)
}

/// The settings of `es.create_subscription`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Unique name.
    pub name: String,
    /// Position after which the subscription starts (`None`: the current end of the log).
    pub start_after: Option<i64>,
    /// Only events of these types (`None`: all).
    pub event_types: Option<Vec<String>>,
    /// Only streams of this type (`None`: all).
    pub stream_type: Option<String>,
    /// Number of partitions, 1..=[`MAX_PARTITIONS`].
    pub partitions: i32,
    /// Attempts before an event is parked, ≥ 1.
    pub max_attempts: i32,
}

impl SubscriptionSpec {
    /// Checks every setting; the error names the argument and the value.
    pub fn validate(&self) -> Result<(), EventStoreError> {
        check_name(&self.name)?;
        if let Some(s) = self.start_after
            && s < 0
        {
            return Err(invalid(
                "start_after",
                format!("{s} is negative (0 = from the start, NULL = from now)"),
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(invalid(
                "partitions",
                format!("{} is not between 1 and {MAX_PARTITIONS}", self.partitions),
            ));
        }
        if self.max_attempts < 1 {
            return Err(invalid(
                "max_attempts",
                format!("{} is not at least 1", self.max_attempts),
            ));
        }
        if let Some(types) = &self.event_types {
            if types.is_empty() {
                return Err(invalid(
                    "event_types",
                    "an empty array matches no event (NULL = all types)".into(),
                ));
            }
            if let Some(i) = types.iter().position(|t| t.is_empty()) {
                return Err(invalid(
                    "event_types",
                    format!("element {} is empty", i + 1),
                ));
            }
        }
        Ok(())
    }
}

/// A subscription or projection name: 1..=63 characters without control characters (it is shown
/// in views and logs, and used as a worker's label).
pub fn check_name(name: &str) -> Result<(), EventStoreError> {
    if name.is_empty() || name.chars().count() > 63 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            format!("{name:?} must be 1 to 63 characters without control characters"),
        ));
    }
    Ok(())
}

/// A consumer's name (`es.claim`): like a subscription's, 1..=63 characters without control
/// characters; it is stored as the owner of the partitions it holds.
pub fn check_consumer(consumer: &str) -> Result<(), EventStoreError> {
    if consumer.is_empty()
        || consumer.chars().count() > 63
        || consumer.chars().any(char::is_control)
    {
        return Err(invalid(
            "consumer",
            format!(
                "{:?} must be 1 to 63 characters without control characters",
                consumer.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// A partition number given to `es.poll`, `es.ack`, `es.nack`, `es.wait`.
pub fn check_partition(partition: i32, partitions: i32) -> Result<(), EventStoreError> {
    if (0..partitions).contains(&partition) {
        Ok(())
    } else {
        Err(invalid(
            "partition",
            format!(
                "{partition} is not between 0 and {} (the subscription has {partitions})",
                partitions - 1
            ),
        ))
    }
}

/// A batch size (`max_count` of `es.poll`, `batch` of a projection).
pub fn check_count(name: &'static str, count: i64) -> Result<(), EventStoreError> {
    if count >= 1 {
        Ok(())
    } else {
        Err(invalid(name, format!("{count} is not positive")))
    }
}

/// A partition's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The consumer that claimed it last (`None`: never claimed or released).
    pub owner: Option<String>,
    /// Whether the lease is still running (`lease_until` is in the future).
    pub live: bool,
    /// `lease_until` as text, for the error.
    pub until: String,
}

/// Fencing: whether `consumer` may poll, ack or nack a partition with this lease. A live lease
/// admits only its owner; a free or expired partition admits anyone (also no consumer).
pub fn check_lease(
    subscription: &str,
    partition: i32,
    lease: &Lease,
    consumer: Option<&str>,
) -> Result<(), EventStoreError> {
    match &lease.owner {
        Some(owner) if lease.live && Some(owner.as_str()) != consumer => {
            Err(EventStoreError::LeasedByAnother {
                subscription: subscription.to_owned(),
                partition,
                owner: owner.clone(),
                lease_until: lease.until.clone(),
                consumer: consumer.map(str::to_owned),
            })
        }
        _ => Ok(()),
    }
}

/// How many partitions one consumer may hold: an even share among the live consumers (those
/// that claimed within their lease), the caller included, rounded up (so together they always
/// cover every partition).
pub fn fair_share(partitions: i32, live_consumers_with_caller: i32) -> i32 {
    let n = live_consumers_with_caller.max(1);
    (partitions + n - 1) / n
}

/// What a `nack` does with the head event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackOutcome {
    /// Counted; the event stays at the head and is delivered again.
    Retry {
        /// Attempts so far.
        attempts: i32,
    },
    /// `max_attempts` reached: the event is parked and the checkpoint moves past it.
    Park {
        /// Attempts made.
        attempts: i32,
    },
}

/// The attempt count after one more failure of the event at `position`: the count carries on
/// when the same event failed before (`head` is the last failed position and its attempts),
/// and starts at 1 for a new one.
pub fn nack(position: i64, head: Option<(i64, i32)>, max_attempts: i32) -> NackOutcome {
    let attempts = match head {
        Some((p, a)) if p == position => a.saturating_add(1),
        _ => 1,
    };
    if attempts >= max_attempts {
        NackOutcome::Park { attempts }
    } else {
        NackOutcome::Retry { attempts }
    }
}

fn invalid(name: &'static str, reason: String) -> EventStoreError {
    EventStoreError::InvalidArgument { name, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SubscriptionSpec {
        SubscriptionSpec {
            name: "billing".into(),
            start_after: Some(0),
            event_types: None,
            stream_type: None,
            partitions: 4,
            max_attempts: 5,
        }
    }

    #[test]
    fn stream_hash_is_fnv1a_and_non_negative() {
        // FNV-1a of 16 zero bytes, computed by hand from the definition.
        let mut h: u32 = 0x811c_9dc5;
        for _ in 0..16 {
            h = h.wrapping_mul(0x0100_0193); // h ^ 0 for a zero byte
        }
        assert_eq!(stream_hash(&[0; 16]), (h & 0x7fff_ffff) as i32);
        // Fixed values (computed independently, in Python): a change here changes every partition and shard in the field.
        assert_eq!(stream_hash(&[0; 16]), 1_768_495_365);
        assert_eq!(stream_hash(&[0xff; 16]), 906_459_637);
        let mut id = [0u8; 16];
        id[15] = 1;
        assert_eq!(stream_hash(&id), 1_751_717_746);
        for b in 0..=255u8 {
            assert!(stream_hash(&[b; 16]) >= 0);
        }
    }

    #[test]
    fn partitions_spread_streams() {
        let mut counts = [0; 4];
        for i in 0..4000u32 {
            let mut id = [0u8; 16];
            id[12..].copy_from_slice(&i.to_be_bytes());
            counts[partition_of(&id, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(partition_of(&[7; 16], 1), 0);
    }

    #[test]
    fn settings_are_checked() {
        assert!(spec().validate().is_ok());
        let cases = [
            (
                SubscriptionSpec {
                    name: String::new(),
                    ..spec()
                },
                "name",
            ),
            (
                SubscriptionSpec {
                    partitions: 0,
                    ..spec()
                },
                "partitions",
            ),
            (
                SubscriptionSpec {
                    partitions: MAX_PARTITIONS + 1,
                    ..spec()
                },
                "partitions",
            ),
            (
                SubscriptionSpec {
                    max_attempts: 0,
                    ..spec()
                },
                "max_attempts",
            ),
            (
                SubscriptionSpec {
                    start_after: Some(-1),
                    ..spec()
                },
                "start_after",
            ),
            (
                SubscriptionSpec {
                    event_types: Some(vec![]),
                    ..spec()
                },
                "event_types",
            ),
        ];
        for (s, arg) in cases {
            match s.validate() {
                Err(EventStoreError::InvalidArgument { name, reason }) => {
                    assert_eq!(name, arg, "{reason}")
                }
                other => panic!("{s:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn consumer_names_are_bounded() {
        assert!(check_consumer("worker-a").is_ok());
        assert!(check_consumer("").is_err());
        assert!(check_consumer(&"x".repeat(64)).is_err());
        assert!(check_consumer("a\nb").is_err());
        assert_eq!(check_consumer("").unwrap_err().sqlstate(), "22023");
    }

    #[test]
    fn partition_and_count_bounds() {
        assert!(check_partition(0, 1).is_ok());
        assert!(check_partition(3, 4).is_ok());
        let e = check_partition(4, 4).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.message().contains("4 is not between 0 and 3"), "{e}");
        assert!(check_partition(-1, 4).is_err());
        assert!(check_count("max_count", 1).is_ok());
        assert!(check_count("max_count", 0).is_err());
    }

    #[test]
    fn a_live_lease_admits_only_its_owner() {
        let held = Lease {
            owner: Some("a".into()),
            live: true,
            until: "t".into(),
        };
        assert!(check_lease("s", 0, &held, Some("a")).is_ok());
        assert_eq!(
            check_lease("s", 0, &held, Some("b"))
                .unwrap_err()
                .sqlstate(),
            "ES201"
        );
        assert!(check_lease("s", 0, &held, None).is_err());
        let expired = Lease {
            live: false,
            ..held
        };
        assert!(check_lease("s", 0, &expired, Some("b")).is_ok());
        assert!(check_lease("s", 0, &expired, None).is_ok());
        let free = Lease {
            owner: None,
            live: false,
            until: String::new(),
        };
        assert!(check_lease("s", 0, &free, None).is_ok());
    }

    #[test]
    fn fair_shares_cover_every_partition() {
        assert_eq!(fair_share(4, 1), 4);
        assert_eq!(fair_share(4, 2), 2);
        assert_eq!(fair_share(4, 3), 2);
        assert_eq!(fair_share(1, 3), 1);
        assert_eq!(fair_share(4, 0), 4);
    }

    #[test]
    fn nack_counts_then_parks() {
        assert_eq!(nack(10, None, 3), NackOutcome::Retry { attempts: 1 });
        assert_eq!(
            nack(10, Some((10, 1)), 3),
            NackOutcome::Retry { attempts: 2 }
        );
        assert_eq!(
            nack(10, Some((10, 2)), 3),
            NackOutcome::Park { attempts: 3 }
        );
        assert_eq!(
            nack(11, Some((10, 2)), 3),
            NackOutcome::Retry { attempts: 1 }
        );
        assert_eq!(nack(5, None, 1), NackOutcome::Park { attempts: 1 });
    }
}
