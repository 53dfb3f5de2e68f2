//! `es_consumer`: the subscription consumers of the benchmark workloads W8–W10 (docs/reference.md §8), run by
//! `benches/run.sh`.
//!
//! Why a program: a consumer loop in bash would start a `psql` per batch (milliseconds each, more
//! than a batch of 500 events costs the store), and W10 needs timestamps of two sessions on one
//! monotonic clock with sub-millisecond resolution.
//!
//! Every mode consumes like an application would: one transaction per batch, `SELECT * FROM
//! es.poll(sub, 0, batch)` (every column of every event reaches the client), then `es.ack(sub, 0,
//! <last position>)` and COMMIT.
//!
//! ```text
//! es_consumer drain   --db DB --sub NAME [--batch 500] --secs S
//!     drains the subscription for S seconds or until es.poll returns nothing;
//!     prints "<events/s> <events> <seconds> <caught_up 0|1> <bytes>"
//! es_consumer follow  --db DB --sub NAME [--batch 500] --stop-file F [--max-secs S] [--linger-ms L]
//!                     [--waiting-poll 1|0]
//!     follows the log until file F exists; after a poll that found nothing the next poll waits
//!     (es.poll(sub, 0, batch, wait_ms => 1000); --waiting-poll 0: es.wait(sub, 0, 1000) first,
//!     then a poll, as before the waiting poll existed); after
//!     a batch that was not full it lingers L ms (default 0) before the next poll, as a Kafka
//!     consumer's fetch.max.wait does, so it reads fewer, larger batches when it keeps up;
//!     prints "<events> <seconds> <batches> <waits> <age_median_ms> <age_max_ms>", where age is
//!     how old the oldest event of a batch was when the batch arrived (now - its recorded_at,
//!     the appending transaction's start), over the batches: how far behind the consumer ran
//! es_consumer latency --db DB --sub NAME --secs S --samples-out F [--gap-ms 10:50] [--waiting-poll 1|0]
//!     a waiter session loops BEGIN + es.poll(sub, 0, 500, wait_ms => 1000) + ack + COMMIT
//!     (--waiting-poll 0: es.wait(sub, 0, 1000) + BEGIN + poll + ack + COMMIT); a probe session appends one
//!     {"type":"Probe"} event to a stream of its own every 10-50 ms (random) for S seconds. A
//!     sample is the time from the moment the probe sent its COMMIT to the moment the waiter's
//!     poll returned the event (both on this process's monotonic clock): an upper bound of
//!     commit -> wake-up -> delivery, since it includes the COMMIT's own round trip. The
//!     subscription must be filtered to event type Probe. Appends the samples (ms) to F;
//!     prints "<median_ms> <p99_ms> <samples> <commit_rtt_median_ms> <max_ms> <wake_median_ms>"
//!     (wake: from the COMMIT sent to the return of the es.wait before the poll that got it; with
//!     the waiting poll there is no separate wake-up, and wake is the sample itself)
//! ```
//! `--horizon 1` (latency; default ES_CONSUMER_HORIZON, else 0) adds a session that times when each probe's event became readable and
//! prints that breakdown to stderr.
//! `--waiting-poll` defaults to ES_CONSUMER_WAITING_POLL from the environment, else 1.
//! Connection: PGHOST (a socket directory or host name), PGPORT, PGUSER from the environment
//! (`scripts/cluster.sh env`); sessions run with ES_CONSUMER_OPTIONS (default
//! `-c synchronous_commit=off -c es.tracing=off`, the conditions of docs/reference.md §8).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::types::{FromSql, Type};
use postgres::{Client, NoTls, Row, Statement};

type Error = Box<dyn std::error::Error + Send + Sync>;

const POLL_SQL: &str = "SELECT * FROM es.poll($1::text, 0, $2::int)";
const ACK_SQL: &str = "SELECT es.ack($1::text, 0, $2::bigint)";
const WAIT_SQL: &str = "SELECT es.wait($1::text, 0, 1000)";
/// The waiting poll: returns the next events, or sleeps up to $3 ms until some are readable and
/// returns them in the same call.
const POLL_WAITING_SQL: &str = "SELECT * FROM es.poll($1::text, 0, $2::int, wait_ms => $3::int)";
/// How long a waiting poll of these consumers sleeps at most (like their es.wait).
const WAIT_MS: i32 = 1000;

fn main() {
    if let Err(e) = run() {
        eprintln!("es_consumer: error: {e}");
        std::process::exit(1);
    }
}

/// `--key value` arguments after the mode.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Result<Args, Error> {
        let mut map = HashMap::new();
        let mut it = raw.iter();
        while let Some(key) = it.next() {
            let key = key
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {key:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), value.clone());
        }
        Ok(Args(map))
    }
    fn get(&self, key: &str) -> Result<&str, Error> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required").into())
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, Error> {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: not a number: {v}").into()),
            None => default.ok_or_else(|| format!("--{key} is required").into()),
        }
    }
}

fn run() -> Result<(), Error> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        return Err("usage: es_consumer drain|follow|latency --db DB --sub NAME ... (see the source header)".into());
    };
    let args = Args::parse(rest)?;
    match mode.as_str() {
        "drain" => drain(&args),
        "follow" => follow(&args),
        "latency" => latency(&args),
        other => Err(format!("unknown mode {other:?}").into()),
    }
}

fn connect(db: &str) -> Result<Client, Error> {
    let mut config = postgres::Config::new();
    config
        .host(&std::env::var("PGHOST").unwrap_or_else(|_| "localhost".into()))
        .port(
            std::env::var("PGPORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
        )
        .user(&std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()))
        .dbname(db)
        .application_name("es_consumer")
        .options(
            &std::env::var("ES_CONSUMER_OPTIONS")
                .unwrap_or_else(|_| "-c synchronous_commit=off -c es.tracing=off".into()),
        );
    Ok(config.connect(NoTls)?)
}

/// Any column's value as its raw bytes (binary format), so a consumer receives every column of
/// every event without this program paying for decoding the ones it does not look at.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Error> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Error> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// "Handles" a batch: looks at every column of every event (the bytes received).
fn handle(rows: &[Row]) -> usize {
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Raw>(i).0.map_or(0, <[u8]>::len))
                .sum::<usize>()
        })
        .sum()
}

/// The consumer's session: its prepared statements.
struct Consumer {
    client: Client,
    sub: String,
    batch: i32,
    poll: Statement,
    poll_waiting: Statement,
    ack: Statement,
}

impl Consumer {
    fn new(db: &str, sub: &str, batch: i32) -> Result<Consumer, Error> {
        let mut client = connect(db)?;
        let poll = client.prepare(POLL_SQL)?;
        let poll_waiting = client.prepare(POLL_WAITING_SQL)?;
        let ack = client.prepare(ACK_SQL)?;
        Ok(Consumer {
            client,
            sub: sub.to_owned(),
            batch,
            poll,
            poll_waiting,
            ack,
        })
    }

    /// One batch in one transaction: poll (a waiting poll when `wait`: it sleeps up to
    /// [`WAIT_MS`] for the first readable events), handle, ack the last position, commit.
    /// Returns the events (empty when there was nothing readable) and when the poll returned.
    fn batch(
        &mut self,
        wait: bool,
        mut on_rows: impl FnMut(&[Row], Instant),
    ) -> Result<usize, Error> {
        let mut tx = self.client.transaction()?;
        let rows = if wait {
            tx.query(&self.poll_waiting, &[&self.sub, &self.batch, &WAIT_MS])?
        } else {
            tx.query(&self.poll, &[&self.sub, &self.batch])?
        };
        let got = Instant::now();
        if let Some(last) = rows.last() {
            let position: i64 = last.try_get("global_position")?;
            on_rows(&rows, got);
            tx.query_one(&self.ack, &[&self.sub, &position])?;
        }
        tx.commit()?;
        Ok(rows.len())
    }
}

fn drain(args: &Args) -> Result<(), Error> {
    let secs: f64 = args.num("secs", None)?;
    let mut c = Consumer::new(
        args.get("db")?,
        args.get("sub")?,
        args.num("batch", Some(500))?,
    )?;
    let (mut events, mut bytes, mut caught_up) = (0usize, 0usize, false);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let n = c.batch(false, |rows, _| bytes += handle(rows))?;
        if n == 0 {
            caught_up = true;
            break;
        }
        events += n;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{:.1} {events} {elapsed:.3} {} {bytes}",
        events as f64 / elapsed,
        caught_up as u8
    );
    Ok(())
}

fn follow(args: &Args) -> Result<(), Error> {
    let stop = PathBuf::from(args.get("stop-file")?);
    let max_secs: f64 = args.num("max-secs", Some(600.0))?;
    let mut c = Consumer::new(
        args.get("db")?,
        args.get("sub")?,
        args.num("batch", Some(500))?,
    )?;
    let wait = c.client.prepare(WAIT_SQL)?;
    let waiting_poll = waiting_poll(args)?;
    let linger = Duration::from_millis(args.num("linger-ms", Some(0))?);
    let (mut events, mut batches, mut waits) = (0usize, 0usize, 0usize);
    let mut ages: Vec<f64> = Vec::new();
    let start = Instant::now();
    // after an empty poll the next one waits (waiting poll) or es.wait runs first
    let mut found_empty = false;
    while !stop.exists() && start.elapsed().as_secs_f64() < max_secs {
        let n = c.batch(waiting_poll && found_empty, |rows, _| {
            handle(rows);
            // timestamptz, binary: microseconds since 2000-01-01 00:00:00 UTC
            if let Some(Raw(Some(raw))) = rows.first().map(|r| r.get::<_, Raw>("recorded_at"))
                && let Ok(bytes) = <[u8; 8]>::try_from(raw)
            {
                let recorded = 946_684_800_000_000i64 + i64::from_be_bytes(bytes);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                ages.push((now - recorded) as f64 / 1000.0);
            }
        })?;
        batches += 1;
        events += n;
        found_empty = n == 0;
        if n == 0 {
            waits += 1;
            if !waiting_poll {
                let sub = c.sub.clone();
                c.client.query_one(&wait, &[&sub])?;
            }
        } else if (n as i32) < c.batch && !linger.is_zero() {
            thread::sleep(linger);
        }
    }
    ages.sort_by(f64::total_cmp);
    let (age_median, age_max) = match ages.last() {
        Some(&max) => (percentile(&ages, 50.0), max),
        None => (0.0, 0.0),
    };
    println!(
        "{events} {:.3} {batches} {waits} {age_median:.1} {age_max:.1}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--waiting-poll 1|0`, by default ES_CONSUMER_WAITING_POLL from the environment (so that
/// `benches/run.sh` can time both ways with one build), else 1.
fn waiting_poll(args: &Args) -> Result<bool, Error> {
    let default = std::env::var("ES_CONSUMER_WAITING_POLL")
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(1);
    Ok(args.num::<u8>("waiting-poll", Some(default))? != 0)
}

/// Prints to stderr how much of each delivery was the wait for the gap-safe horizon: per probe,
/// `readable` = COMMIT sent -> the event readable (as the horizon session saw it, an upper bound
/// by one of its round trips), and `after` = delivery - readable (the wake-up and the poll's
/// return once readable); the slowest 1 % of deliveries with their parts.
fn horizon_breakdown(
    lag: &HashMap<i64, (f64, bool)>,
    received: &HashMap<i64, (Instant, Instant)>,
    sent: &HashMap<i64, (Instant, Duration)>,
    seq: i64,
) {
    let mut rows: Vec<(f64, f64, bool)> = (1..=seq)
        .filter_map(|s| {
            let (readable, at_once) = *lag.get(&s)?;
            let delivery = received[&s]
                .1
                .saturating_duration_since(sent[&s].0)
                .as_secs_f64()
                * 1000.0;
            Some((delivery, readable, at_once))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let mut readable: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let mut after: Vec<f64> = rows.iter().map(|r| (r.0 - r.1).max(0.0)).collect();
    readable.sort_by(f64::total_cmp);
    after.sort_by(f64::total_cmp);
    let held = rows.iter().filter(|r| !r.2).count();
    // the deliveries of the probes that were readable at the first look and of those held back
    let split = |held: bool| {
        let mut d: Vec<f64> = rows.iter().filter(|r| r.2 != held).map(|r| r.0).collect();
        d.sort_by(f64::total_cmp);
        if d.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{} probes, median {:.3} ms, p99 {:.3} ms",
                d.len(),
                percentile(&d, 50.0),
                percentile(&d, 99.0)
            )
        }
    };
    let (readable_split, held_split) = (split(false), split(true));
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let worst = rows.len().div_ceil(100);
    let worst_held = rows[..worst].iter().filter(|r| !r.2).count();
    let worst_readable: f64 = rows[..worst].iter().map(|r| r.1).sum::<f64>() / worst as f64;
    let worst_delivery: f64 = rows[..worst].iter().map(|r| r.0).sum::<f64>() / worst as f64;
    eprintln!(
        "es_consumer latency: horizon breakdown over {} probes: COMMIT sent -> readable median {:.3} ms, p99 {:.3} ms; \
         not readable at the first look after the COMMIT (a lower position in flight): {held}; \
         delivery - readable median {:.3} ms, p99 {:.3} ms; the slowest 1 % ({worst}): delivery {worst_delivery:.3} ms, \
         of which readable after {worst_readable:.3} ms (mean), {worst_held} held behind a lower position; \
         delivery of the probes readable at the first look: {readable_split}; of those held: {held_split}",
        rows.len(),
        percentile(&readable, 50.0),
        percentile(&readable, 99.0),
        percentile(&after, 50.0),
        percentile(&after, 99.0),
    );
}

/// A small xorshift generator (the probe gaps only need to be irregular, not good random).
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // nearest rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn latency(args: &Args) -> Result<(), Error> {
    let db = args.get("db")?.to_owned();
    let sub = args.get("sub")?.to_owned();
    let secs: f64 = args.num("secs", None)?;
    let out = PathBuf::from(args.get("samples-out")?);
    let gap = args.0.get("gap-ms").map_or("10:50", String::as_str);
    let (gap_lo, gap_hi): (u64, u64) = match gap.split_once(':') {
        Some((a, b)) => (a.parse()?, b.parse()?),
        None => return Err("--gap-ms takes LO:HI".into()),
    };
    let mut rng = Rng::new();
    // the probe's stream: a new random id, so its versions are the probe's sequence numbers
    let id: [u8; 16] = {
        let (a, b) = (rng.next(), rng.next());
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&a.to_be_bytes());
        id[8..].copy_from_slice(&b.to_be_bytes());
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        id
    };
    let id_text = {
        let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    };

    // the waiter: a consumer that sleeps in es.wait and records when each probe reached it
    // probe version -> (when es.wait returned true before the poll that got it, when that poll returned)
    let received: Arc<Mutex<HashMap<i64, (Instant, Instant)>>> = Arc::default();
    let probe_done = Arc::new(AtomicBool::new(false));
    let sent_count = Arc::new(AtomicUsize::new(0));
    let mut waiter = Consumer::new(&db, &sub, 500)?;
    let wait = waiter.client.prepare(WAIT_SQL)?;
    let waiting_poll = waiting_poll(args)?;
    let waiter_thread = {
        let (received, probe_done, sent_count, sub) = (
            received.clone(),
            probe_done.clone(),
            sent_count.clone(),
            sub.clone(),
        );
        thread::spawn(move || -> Result<usize, Error> {
            let mut foreign = 0usize;
            let mut finish_by: Option<Instant> = None;
            loop {
                if probe_done.load(Ordering::Acquire) {
                    let deadline =
                        *finish_by.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                    if received.lock().unwrap().len() >= sent_count.load(Ordering::Acquire)
                        || Instant::now() > deadline
                    {
                        return Ok(foreign);
                    }
                }
                // es.wait, then a poll (two round trips and a BEGIN after the wake-up), or one
                // waiting poll that returns the events it waited for
                let woke = if waiting_poll {
                    None
                } else {
                    let ready: bool = waiter.client.query_one(&wait, &[&sub])?.get(0);
                    if !ready {
                        continue;
                    }
                    Some(Instant::now())
                };
                let mut failure: Option<Error> = None;
                waiter.batch(waiting_poll, |rows, got| {
                    let mut map = received.lock().unwrap();
                    for row in rows {
                        let sid: Raw = row.get("stream_id");
                        match row.try_get::<_, i64>("version") {
                            Ok(v) if sid.0 == Some(&id[..]) => {
                                map.insert(v, (woke.unwrap_or(got), got));
                            }
                            Ok(_) => foreign += 1,
                            Err(e) => failure = Some(e.into()),
                        }
                    }
                })?;
                if let Some(e) = failure {
                    return Err(e);
                }
            }
        })
    };

    // the probe: appends one event, then times its COMMIT
    // --horizon 1: a third session finds, for each probe, when its event became readable (the
    // gap-safe horizon passed it; docs/reference.md §3): after the probe's COMMIT it asks
    // es.read_all(position - 1, 1) again and again until the event comes back. Off by default
    // (it adds a busy session); the breakdown goes to stderr.
    let horizon_default = std::env::var("ES_CONSUMER_HORIZON")
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(0);
    let (horizon_tx, horizon_thread) = if args.num::<u8>("horizon", Some(horizon_default))? != 0 {
        let (tx, rx) = std::sync::mpsc::channel::<(i64, Instant)>();
        let mut session = connect(&db)?;
        let id_text = id_text.clone();
        let thread = thread::spawn(move || -> Result<HashMap<i64, (f64, bool)>, Error> {
            let position = session.prepare(
                "SELECT global_position FROM es.events WHERE stream_id = $1::text::uuid AND version = $2",
            )?;
            let readable =
                session.prepare("SELECT count(*) FROM es.read_all($1::bigint - 1, 1)")?;
            let mut lag = HashMap::new();
            for (seq, commit_sent) in rx {
                let pos: i64 = session.query_one(&position, &[&id_text, &seq])?.get(0);
                let mut first = true;
                let mut at_once = false;
                loop {
                    let n: i64 = session.query_one(&readable, &[&pos])?.get(0);
                    if n > 0 {
                        break;
                    }
                    first = false;
                    if commit_sent.elapsed() > Duration::from_secs(10) {
                        return Err(format!("probe {seq} not readable after 10 s").into());
                    }
                }
                if first {
                    at_once = true;
                }
                let ms = commit_sent.elapsed().as_secs_f64() * 1000.0;
                lag.insert(seq, (ms, at_once));
            }
            Ok(lag)
        });
        (Some(tx), Some(thread))
    } else {
        (None, None)
    };
    let mut probe = connect(&db)?;
    let append =
        probe.prepare("SELECT es.append_events($1::text::uuid, NULL, ARRAY[$2::text::jsonb])")?;
    let mut sent: HashMap<i64, (Instant, Duration)> = HashMap::new();
    let start = Instant::now();
    let mut seq = 0i64;
    let probe_result = (|| -> Result<(), Error> {
        while start.elapsed().as_secs_f64() < secs {
            let gap = gap_lo + rng.next() % (gap_hi - gap_lo + 1);
            thread::sleep(Duration::from_millis(gap));
            seq += 1;
            let data = format!(r#"{{"type":"Probe","seq":{seq}}}"#);
            let mut tx = probe.transaction()?;
            let version: i64 = tx.query_one(&append, &[&id_text, &data])?.get(0);
            if version != seq {
                return Err(format!("probe stream at version {version}, expected {seq}").into());
            }
            let commit_sent = Instant::now();
            tx.commit()?;
            sent.insert(seq, (commit_sent, commit_sent.elapsed()));
            if let Some(tx) = &horizon_tx {
                let _ = tx.send((seq, commit_sent));
            }
            sent_count.store(sent.len(), Ordering::Release);
        }
        Ok(())
    })();
    probe_done.store(true, Ordering::Release);
    drop(horizon_tx);
    let horizon = match horizon_thread {
        Some(t) => Some(t.join().map_err(|_| "the horizon thread panicked")??),
        None => None,
    };
    let foreign = waiter_thread
        .join()
        .map_err(|_| "the waiter thread panicked")??;
    probe_result?;
    if foreign > 0 {
        return Err(format!("the waiter got {foreign} events that are not probes: is the subscription filtered to type Probe?").into());
    }

    let received = received.lock().unwrap();
    let missing: Vec<i64> = (1..=seq).filter(|s| !received.contains_key(s)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} of {seq} probes never reached the waiter within 10 s (first: {:?})",
            missing.len(),
            &missing[..missing.len().min(5)]
        )
        .into());
    }
    let mut samples: Vec<f64> = (1..=seq)
        .map(|s| {
            received[&s]
                .1
                .saturating_duration_since(sent[&s].0)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let mut wakes: Vec<f64> = (1..=seq)
        .map(|s| {
            received[&s]
                .0
                .saturating_duration_since(sent[&s].0)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    wakes.sort_by(f64::total_cmp);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)?;
    for s in &samples {
        writeln!(file, "{s:.3}")?;
    }
    samples.sort_by(f64::total_cmp);
    let mut rtt: Vec<f64> = sent
        .values()
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    rtt.sort_by(f64::total_cmp);
    if samples.is_empty() {
        return Err("no probe was sent".into());
    }
    println!(
        "{:.3} {:.3} {} {:.3} {:.3} {:.3}",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.len(),
        percentile(&rtt, 50.0),
        samples[samples.len() - 1],
        percentile(&wakes, 50.0)
    );
    if let Some(lag) = horizon {
        horizon_breakdown(&lag, &received, &sent, seq);
    }
    Ok(())
}
