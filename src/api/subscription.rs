//! Subscriptions (docs/reference.md §9): `es.stream_hash`, `es.create_subscription`,
//! `es.drop_subscription`, `es.poll`, `es.ack`, `es.nack`, `es.claim`, `es.release`,
//! `es.replay_parked`, `es.wait`.

use crate::pg::call::{Call, i64_datum, no_value};
use crate::store::subscription;
use event_store_core::EventStoreError;
use event_store_core::subscription::{SubscriptionSpec, stream_hash as hash};
use event_store_macros::sql_function;
use pgrx::pg_sys::Datum;

#[sql_function(
    sql = "es.stream_hash(stream_id uuid)
RETURNS integer
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE",
    comment = "The stable hash of a stream id that chooses its partition (es.stream_hash(s) % partitions) and its shard: 32-bit FNV-1a over the uuid's 16 bytes, top bit cleared. The same on every node and version."
)]
fn stream_hash(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let stream = call.uuid(stream_hash_args::stream_id)?;
    Ok(Datum::from(hash(stream.as_bytes())))
}

#[sql_function(
    sql = "es.create_subscription(name text, start_after bigint DEFAULT 0, event_types text[] DEFAULT NULL,
                              stream_type text DEFAULT NULL, partitions integer DEFAULT 1,
                              max_attempts integer DEFAULT 5)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Creates a durable subscription: partitions checkpoints that start after start_after (NULL = the current end of the log), over the events of the given types (NULL = all) of streams of stream_type (NULL = all). An event is in partition es.stream_hash(stream_id) % partitions; after max_attempts failed attempts (es.nack) it is parked. 42710 when the name is taken.",
    access = "owner",
    span = "subscription.create",
    span_args = "subscription = name, partitions = partitions",
    span_fields = r#"db.system = "postgresql""#
)]
fn create_subscription(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use create_subscription_args as arg;
    let spec = SubscriptionSpec {
        name: call.text(arg::name)?,
        start_after: call.i64(arg::start_after),
        event_types: call.text_array(arg::event_types)?,
        stream_type: call.optional_text(arg::stream_type),
        partitions: call.required_i32(arg::partitions)?,
        max_attempts: call.required_i32(arg::max_attempts)?,
    };
    subscription::create(&spec, call.arg(arg::event_types))?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.drop_subscription(name text)
RETURNS void
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Drops a subscription with its checkpoints and parked events (ES202 when there is none; a projection's subscription goes with es.drop_projection).",
    access = "owner",
    span = "subscription.drop",
    span_args = "subscription = name",
    span_fields = r#"db.system = "postgresql""#
)]
fn drop_subscription(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    subscription::drop(&call.text(drop_subscription_args::name)?)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.poll(name text, partition integer DEFAULT 0, max_count bigint DEFAULT 100, consumer text DEFAULT NULL,
        wait_ms integer DEFAULT 0)
RETURNS SETOF es.events
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "The partition's next events after its checkpoint, in global_position order, at most max_count: events put back by es.replay_parked first, then new ones. Gap-safe like es.read_all (never skips an event that commits late). Does not move the checkpoint (es.ack does). With wait_ms > 0 and nothing readable it sleeps like es.wait until an event of the partition is readable and returns it in the same call (empty after wait_ms). ES201 when another consumer holds the partition's lease.",
    span = "subscription.poll",
    span_args = "subscription = name, partition = partition, max_count = max_count, wait_ms = wait_ms",
    span_fields = r#"db.system = "postgresql", db.operation = "SELECT""#
)]
fn poll(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use poll_args as arg;
    let name = call.text(arg::name)?;
    let partition = call.required_i32(arg::partition)?;
    let max = call.required_i64(arg::max_count)?;
    let consumer = call.optional_text(arg::consumer);
    let wait_ms = call.required_i32(arg::wait_ms)?;
    let mut out = call.materialize();
    subscription::poll(
        &name,
        partition,
        max,
        consumer.as_deref(),
        wait_ms,
        &mut out,
    )?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.ack(name text, partition integer, \"position\" bigint, consumer text DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Moves the partition's checkpoint to position (never backwards: an older position is a no-op) in the caller's transaction, and returns the checkpoint: write the read model and ack in one transaction to handle each event exactly once. 22023 past the readable end of the log; ES201 when another consumer holds the lease.",
    access = "owner",
    span = "subscription.ack",
    span_args = "subscription = name, partition = partition, position = position",
    span_fields = r#"db.system = "postgresql", db.operation = "UPDATE""#
)]
fn ack(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use ack_args as arg;
    let name = call.text(arg::name)?;
    let partition = call.required_i32(arg::partition)?;
    let position = call.required_i64(arg::position)?;
    let consumer = call.optional_text(arg::consumer);
    Ok(i64_datum(subscription::ack(
        &name,
        partition,
        position,
        consumer.as_deref(),
    )?))
}

#[sql_function(
    sql = "es.nack(name text, partition integer, \"position\" bigint, error text, consumer text DEFAULT NULL)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Counts a failed attempt of the event at position (the partition's next event, or one put back by es.replay_parked); after max_attempts it is parked in es.parked_events with the error, the checkpoint moves past it, and later events of its stream are parked behind it. Returns true when it was parked.",
    access = "owner",
    span = "subscription.nack",
    span_args = "subscription = name, partition = partition, position = position",
    span_fields = r#"db.system = "postgresql", db.operation = "UPDATE""#
)]
fn nack(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use nack_args as arg;
    let name = call.text(arg::name)?;
    let partition = call.required_i32(arg::partition)?;
    let position = call.required_i64(arg::position)?;
    let error = call.optional_text(arg::error).unwrap_or_default();
    let consumer = call.optional_text(arg::consumer);
    let parked = subscription::nack(&name, partition, position, &error, consumer.as_deref())?;
    Ok(Datum::from(parked))
}

#[sql_function(
    sql = "es.claim(name text, consumer text, lease interval DEFAULT '30 seconds')
RETURNS TABLE(partition integer, lease_until timestamptz)
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 4",
    comment = "Competing consumers: renews the consumer's leases and takes free or expired partitions up to its fair share (partitions / consumers that claimed within their lease, rounded up; a consumer above its share gives partitions back, so a newcomer gets its share within one lease renewal), and returns the partitions it holds with their lease's end. While a lease runs, es.poll/es.ack/es.nack of the partition naming another consumer fail with ES201.",
    access = "owner",
    span = "subscription.claim",
    span_args = "subscription = name, consumer = consumer",
    span_fields = r#"db.system = "postgresql", db.operation = "UPDATE""#
)]
fn claim(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use claim_args as arg;
    let name = call.text(arg::name)?;
    let consumer = call.text(arg::consumer)?;
    let lease = call.positive_interval(arg::lease)?;
    let mut out = call.materialize();
    subscription::claim(&name, &consumer, lease, &mut out)?;
    Ok(no_value())
}

#[sql_function(
    sql = "es.release(name text, consumer text)
RETURNS integer
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Gives up every partition the consumer holds (they are free for es.claim at once); returns how many.",
    access = "owner",
    span = "subscription.release",
    span_args = "subscription = name, consumer = consumer",
    span_fields = r#"db.system = "postgresql", db.operation = "UPDATE""#
)]
fn release(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use release_args as arg;
    let n = subscription::release(&call.text(arg::name)?, &call.text(arg::consumer)?)?;
    Ok(Datum::from(n as i32))
}

#[sql_function(
    sql = "es.replay_parked(name text)
RETURNS integer
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER",
    comment = "Puts the subscription's parked events back in front of its consumers: es.poll returns them first, in position order; acking them (or parking them again with es.nack) finishes them. Returns how many.",
    access = "owner",
    span = "subscription.replay_parked",
    span_args = "subscription = name",
    span_fields = r#"db.system = "postgresql", db.operation = "UPDATE""#
)]
fn replay_parked(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    let n = subscription::replay_parked(&call.text(replay_parked_args::name)?)?;
    Ok(Datum::from(n as i32))
}

#[sql_function(
    sql = "es.wait(name text, partition integer DEFAULT 0, timeout_ms integer DEFAULT 10000)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE",
    comment = "Returns true as soon as the partition has a readable event (what es.poll would return), false after timeout_ms. Sleeps on its latch: a commit that appends wakes it (no NOTIFY per append); on a replica it looks again every es.watermark_interval.",
    span = "subscription.wait",
    span_args = "subscription = name, partition = partition, timeout_ms = timeout_ms",
    span_fields = r#"db.system = "postgresql""#
)]
fn wait(call: &mut Call<'_>) -> Result<Datum, EventStoreError> {
    use wait_args as arg;
    let ready = subscription::wait(
        &call.text(arg::name)?,
        call.required_i32(arg::partition)?,
        call.required_i32(arg::timeout_ms)?,
    )?;
    Ok(Datum::from(ready))
}
