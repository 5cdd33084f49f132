//! The store: batch SET / GET / EXISTS over a pool of connections, large batches split across
//! several connections that run in parallel, a dropped connection re-established and the batch's
//! unfinished keys retried once.

use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{self, LaneError};
use crate::stats::{self, Counters, Op, Stats};
use crate::Outcome;
use parking_lot::Mutex;
use std::io::IoSlice;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Least bytes worth a connection (and a thread) of their own in one batch.
const LANE_MIN_BYTES: u64 = 4 << 20;
/// Least keys worth a connection of their own in one EXISTS batch.
const LANE_MIN_KEYS: usize = 4096;

/// Where batch_get writes: for each value, the caller's segments, in order.
///
/// Flattened (one vector of segments plus value boundaries) so building it costs one allocation
/// per call, not one per value.
#[derive(Debug, Default)]
pub struct ReadTargets<'a> {
    segments: Vec<&'a mut [u8]>,
    bounds: Vec<usize>,
}

impl<'a> ReadTargets<'a> {
    /// Room for `values` values of `segments` segments in all.
    pub fn with_capacity(values: usize, segments: usize) -> Self {
        let mut bounds = Vec::with_capacity(values + 1);
        bounds.push(0);
        ReadTargets { segments: Vec::with_capacity(segments), bounds }
    }

    /// Adds a value made of `segments`.
    pub fn push_value(&mut self, segments: impl IntoIterator<Item = &'a mut [u8]>) {
        if self.bounds.is_empty() {
            self.bounds.push(0);
        }
        self.segments.extend(segments);
        self.bounds.push(self.segments.len());
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total length of value `i`'s segments.
    pub fn value_len(&self, i: usize) -> u64 {
        self.segments[self.bounds[i]..self.bounds[i + 1]].iter().map(|s| s.len() as u64).sum()
    }
}

/// How a batch went, besides the per-key outcomes.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Keys whose outcome is a failure (not a miss): timeouts, I/O and server errors.
    pub failed: usize,
    /// The first such failure, for the caller's error message.
    pub first_error: Option<Error>,
}

/// How one lane ended.
struct LaneEnd {
    key_error: Option<Error>,
    /// Keys from this index on were not done because of this error.
    failed: Option<(usize, Error)>,
}

/// A handle on one Valkey server for one namespace. `Send + Sync`: share it between threads.
pub struct Store {
    cfg: Config,
    pool: Mutex<Vec<Conn>>,
    control: Mutex<Option<redis::Connection>>,
    counters: Counters,
    /// Set when a connection failed; the next connection made counts as a reconnect.
    broken: AtomicBool,
    /// Lanes running now, over every thread using this store.
    active_lanes: AtomicUsize,
    /// Cores of this machine: lanes poll their sockets (see [`Conn::set_spin`]) only while fewer
    /// lanes than cores run, so a polling thread never takes a core the server or another lane needs.
    cores: usize,
}

/// How long a lane polls its socket before sleeping in a read, while it has a core to itself.
const SPIN: Duration = Duration::from_micros(50);

/// Counts a running lane for as long as it lives.
struct LaneSlot<'a>(&'a AtomicUsize);

impl Drop for LaneSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Store {
    /// Connects (one connection, to check the server and the credentials now).
    pub fn open(cfg: Config) -> Result<Store> {
        tracing::debug!(config = ?cfg, "opening store");
        let conn = Conn::connect(&cfg)?;
        tracing::info!(server = %cfg.server(), prefix = %String::from_utf8_lossy(cfg.namespace.prefix()), "connected");
        Ok(Store {
            cfg,
            pool: Mutex::new(vec![conn]),
            control: Mutex::new(None),
            counters: Counters::default(),
            broken: AtomicBool::new(false),
            active_lanes: AtomicUsize::new(0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn take_conn(&self) -> Result<Conn> {
        if let Some(c) = self.pool.lock().pop() {
            return Ok(c);
        }
        self.connect()
    }

    /// A new connection; counted as a reconnect when one failed before.
    fn connect(&self) -> Result<Conn> {
        let conn = Conn::connect(&self.cfg)?;
        if self.broken.swap(false, Relaxed) {
            self.counters.reconnects.fetch_add(1, Relaxed);
            tracing::info!(server = %self.cfg.server(), "reconnected");
        }
        Ok(conn)
    }

    fn put_conn(&self, conn: Conn) {
        let mut pool = self.pool.lock();
        if pool.len() < 2 * self.cfg.connections + 4 {
            pool.push(conn);
        }
    }

    /// Runs `op` on a pooled connection with a deadline for `bytes`; after a dropped connection,
    /// empties the pool (its other connections are likely dead too) and goes on once more from
    /// where it stopped on a new connection. All our commands are idempotent, so a retry is safe.
    fn run_lane(&self, bytes: u64, mut op: impl FnMut(&mut Conn, usize) -> std::result::Result<Option<Error>, LaneError>) -> LaneEnd {
        let mut done = 0;
        let mut retried = false;
        let running = self.active_lanes.fetch_add(1, Relaxed) + 1;
        let _slot = LaneSlot(&self.active_lanes);
        let spin = if running < self.cores { SPIN } else { Duration::ZERO };
        loop {
            let conn = if retried { self.connect() } else { self.take_conn() };
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => return LaneEnd { key_error: None, failed: Some((done, e)) },
            };
            conn.set_deadline(Some(Instant::now() + self.cfg.request_timeout(bytes)));
            conn.set_spin(spin);
            match op(&mut conn, done) {
                Ok(key_error) => {
                    conn.set_deadline(None);
                    self.put_conn(conn);
                    return LaneEnd { key_error, failed: None };
                }
                Err(LaneError { error, done: d }) => {
                    tracing::warn!(error = %error, "connection failed");
                    done = d;
                    if error.kind() == ErrorKind::Connection {
                        self.broken.store(true, Relaxed);
                    }
                    if error.kind() == ErrorKind::Connection && !retried {
                        self.pool.lock().clear();
                        retried = true;
                        continue;
                    }
                    return LaneEnd { key_error: None, failed: Some((done, error)) };
                }
            }
        }
    }

    /// Splits `0..n` into at most `self.cfg.connections` contiguous ranges of similar weight,
    /// each worth at least `min_weight`.
    fn lanes(&self, weights: impl Iterator<Item = u64> + Clone, min_weight: u64) -> Vec<Range<usize>> {
        let n = weights.clone().count();
        let total: u64 = weights.clone().sum();
        let count = (total / min_weight.max(1)).clamp(1, self.cfg.connections as u64).min(n.max(1) as u64) as usize;
        let mut lanes = Vec::with_capacity(count);
        let (mut start, mut acc) = (0, 0u64);
        for (i, w) in weights.enumerate() {
            acc += w;
            if lanes.len() + 1 < count && acc * count as u64 >= total * (lanes.len() as u64 + 1) {
                lanes.push(start..i + 1);
                start = i + 1;
            }
        }
        lanes.push(start..n);
        lanes
    }

    /// Turns the lanes' ends into per-key failure outcomes and the call's result. The call fails
    /// as a whole only when no key got an answer because no connection could be made at all.
    fn finish(&self, ends: Vec<(Range<usize>, LaneEnd)>, outcomes: &mut [Outcome]) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        let mut all_unreachable = !ends.is_empty();
        for (range, end) in ends {
            if let Some(e) = end.key_error {
                report.first_error.get_or_insert(e);
            }
            match end.failed {
                Some((done, e)) => {
                    all_unreachable &= done == 0 && matches!(e.kind(), ErrorKind::Connection | ErrorKind::Auth);
                    let outcome = if e.kind() == ErrorKind::Timeout { Outcome::Timeout } else { Outcome::IoError };
                    outcomes[range.start + done..range.end].fill(outcome);
                    report.first_error.get_or_insert(e);
                }
                None => all_unreachable = false,
            }
        }
        report.failed = outcomes.iter().filter(|o| o.is_failure()).count();
        self.counters.errors.fetch_add(report.failed as u64, Relaxed);
        if all_unreachable {
            return Err(report.first_error.take().expect("a lane failed"));
        }
        Ok(report)
    }

    /// Stores `values[i]` (the concatenation of its segments) under `keys[i]`. `outcomes[i]`
    /// becomes [`Outcome::Ok`] or the reason key i was not stored.
    pub fn batch_set(&self, keys: &[&[u8]], values: &[&[IoSlice<'_>]], outcomes: &mut [Outcome]) -> Result<BatchReport> {
        check_batch(keys, values.len(), outcomes.len())?;
        if keys.is_empty() {
            return Ok(BatchReport::default());
        }
        let started = Instant::now();
        let sizes: Vec<u64> = values.iter().map(|v| v.iter().map(|s| s.len() as u64).sum()).collect();
        let lanes = self.lanes(sizes.iter().copied(), LANE_MIN_BYTES);
        let mut jobs = Vec::with_capacity(lanes.len());
        let mut rest = &mut *outcomes;
        for range in &lanes {
            let (mine, tail) = rest.split_at_mut(range.len());
            rest = tail;
            let (keys, values, sizes) = (&keys[range.clone()], &values[range.clone()], &sizes[range.clone()]);
            let bytes = sizes.iter().sum();
            let cfg = &self.cfg;
            jobs.push(move || {
                self.run_lane(bytes, |conn, done| {
                    pipeline::set(conn, cfg.namespace.prefix(), keys, values, sizes, cfg.value_format, cfg.checksum, cfg.set_window, mine, done)
                })
            });
        }
        let ends = lanes.into_iter().zip(run_parallel(jobs)).collect();
        let report = self.finish(ends, outcomes);
        let stored = outcomes.iter().zip(&sizes).filter(|(o, _)| **o == Outcome::Ok);
        let (pages, bytes) = stored.fold((0, 0), |(p, b), (_, s)| (p + 1, b + s));
        self.counters.pages_written.fetch_add(pages, Relaxed);
        self.counters.bytes_written.fetch_add(bytes, Relaxed);
        self.counters.record(Op::Set, started.elapsed());
        report
    }

    /// Reads the value of `keys[i]` into `targets`' value i. `outcomes[i]` is [`Outcome::Ok`] only
    /// when exactly the stored bytes were written into the segments.
    pub fn batch_get(&self, keys: &[&[u8]], targets: &mut ReadTargets<'_>, outcomes: &mut [Outcome]) -> Result<BatchReport> {
        check_batch(keys, targets.len(), outcomes.len())?;
        if keys.is_empty() {
            return Ok(BatchReport::default());
        }
        let started = Instant::now();
        let sizes: Vec<u64> = (0..targets.len()).map(|i| targets.value_len(i)).collect();
        let lanes = self.lanes(sizes.iter().copied(), LANE_MIN_BYTES);
        let mut jobs = Vec::with_capacity(lanes.len());
        let mut rest_out = &mut *outcomes;
        let mut rest_segs = &mut targets.segments[..];
        for range in &lanes {
            let (mine, tail) = rest_out.split_at_mut(range.len());
            rest_out = tail;
            let base = targets.bounds[range.start];
            let (segs, tail) = rest_segs.split_at_mut(targets.bounds[range.end] - base);
            rest_segs = tail;
            let bounds: Vec<usize> = targets.bounds[range.start..=range.end].iter().map(|b| b - base).collect();
            let (keys, sizes) = (&keys[range.clone()], &sizes[range.clone()]);
            let bytes = sizes.iter().sum();
            let cfg = &self.cfg;
            jobs.push(move || {
                self.run_lane(bytes, |conn, done| {
                    pipeline::get(conn, cfg.namespace.prefix(), keys, segs, &bounds, sizes, cfg.value_format, cfg.get_window, mine, done)
                })
            });
        }
        let ends = lanes.into_iter().zip(run_parallel(jobs)).collect();
        let report = self.finish(ends, outcomes);
        let (mut hits, mut misses, mut bytes) = (0, 0, 0);
        for (o, s) in outcomes.iter().zip(&sizes) {
            if *o == Outcome::Ok {
                hits += 1;
                bytes += s;
            } else {
                misses += 1;
            }
        }
        self.counters.get_hits.fetch_add(hits, Relaxed);
        self.counters.get_misses.fetch_add(misses, Relaxed);
        self.counters.pages_read.fetch_add(hits, Relaxed);
        self.counters.bytes_read.fetch_add(bytes, Relaxed);
        self.counters.record(Op::Get, started.elapsed());
        report
    }

    /// Sets `found[i]` to whether `keys[i]` exists and returns how many keys exist in a row from
    /// the first. A key whose connection failed counts as not found (and ends the leading run).
    pub fn batch_exists(&self, keys: &[&[u8]], found: &mut [bool]) -> Result<(usize, BatchReport)> {
        check_batch(keys, found.len(), found.len())?;
        if keys.is_empty() {
            return Ok((0, BatchReport::default()));
        }
        let started = Instant::now();
        let lanes = self.lanes(std::iter::repeat_n(1, keys.len()), LANE_MIN_KEYS as u64);
        let mut jobs = Vec::with_capacity(lanes.len());
        let mut rest = &mut *found;
        for range in &lanes {
            let (mine, tail) = rest.split_at_mut(range.len());
            rest = tail;
            mine.fill(false);
            let keys = &keys[range.clone()];
            let prefix = self.cfg.namespace.prefix();
            jobs.push(move || self.run_lane(0, |conn, done| pipeline::exists(conn, prefix, keys, mine, done).map(|()| None)));
        }
        let ends: Vec<_> = lanes.into_iter().zip(run_parallel(jobs)).collect();
        let mut outcomes: Vec<Outcome> = found.iter().map(|f| if *f { Outcome::Ok } else { Outcome::Miss }).collect();
        let report = self.finish(ends, &mut outcomes)?;
        let hits = found.iter().filter(|f| **f).count() as u64;
        self.counters.exists_hits.fetch_add(hits, Relaxed);
        self.counters.exists_misses.fetch_add(keys.len() as u64 - hits, Relaxed);
        self.counters.record(Op::Exists, started.elapsed());
        Ok((found.iter().take_while(|f| **f).count(), report))
    }

    /// One PING round trip on a data connection.
    pub fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        let end = self.run_lane(0, |conn, _| match conn.command(&[b"PING"]) {
            Ok(crate::conn::Reply::Simple(_) | crate::conn::Reply::Ok) => Ok(None),
            Ok(other) => Err(LaneError { error: Error::protocol(format!("PING answered with {other:?}")), done: 0 }),
            Err(error) => Err(LaneError { error, done: 0 }),
        });
        match end.failed {
            Some((_, e)) => Err(e),
            None => Ok(started.elapsed()),
        }
    }

    /// Runs `f` on the control connection (the `redis` crate's, for INFO / SCAN / UNLINK),
    /// opening it if needed. A connection that fails is dropped; after a dropped connection `f`
    /// runs once more on a new one (INFO, SCAN and UNLINK are safe to repeat).
    fn with_control<T>(&self, mut f: impl FnMut(&mut redis::Connection) -> Result<T>) -> Result<T> {
        let mut slot = self.control.lock();
        let mut retried = false;
        loop {
            if slot.is_none() {
                *slot = Some(self.control_connection()?);
            }
            let result = f(slot.as_mut().expect("control connection is open"));
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *slot = None;
                    if e.kind() == ErrorKind::Connection && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(Error::new(e.kind(), format!("{} ({})", e.message(), self.cfg.server())));
                }
            }
        }
    }

    fn control_connection(&self) -> Result<redis::Connection> {
        let mut redis_info = redis::RedisConnectionInfo::default().set_db(self.cfg.db.into());
        if let Some(u) = &self.cfg.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &self.cfg.password {
            redis_info = redis_info.set_password(p);
        }
        let info = redis::IntoConnectionInfo::into_connection_info((self.cfg.host.clone(), self.cfg.port))?
            .set_redis_settings(redis_info);
        let con = redis::Client::open(info)?.get_connection_with_timeout(self.cfg.connect_timeout)?;
        con.set_read_timeout(Some(self.cfg.io_timeout))?;
        con.set_write_timeout(Some(self.cfg.io_timeout))?;
        Ok(con)
    }

    /// Server statistics and this handle's counters.
    pub fn stats(&self) -> Result<Stats> {
        let server = self.with_control(|con| stats::server_stats(con, &self.cfg.namespace.model_pattern()))?;
        Ok(Stats { server, client: self.counters.snapshot() })
    }

    /// This handle's counters only (no server round trip).
    pub fn client_stats(&self) -> crate::stats::ClientStats {
        self.counters.snapshot()
    }

    /// Deletes every key of this model (all ranks, this database); returns how many.
    pub fn clear(&self) -> Result<u64> {
        let n = self.with_control(|con| stats::scan_keys(con, &self.cfg.namespace.model_pattern(), true))?;
        tracing::info!(model = %self.cfg.namespace.model(), keys = n, "cleared");
        Ok(n)
    }
}

fn check_batch(keys: &[&[u8]], values: usize, outcomes: usize) -> Result<()> {
    if values != keys.len() || outcomes != keys.len() {
        return Err(Error::invalid_argument(format!(
            "{} keys but {values} values and {outcomes} outcome slots",
            keys.len()
        )));
    }
    if let Some(i) = keys.iter().position(|k| k.is_empty()) {
        return Err(Error::invalid_argument(format!("key {i} is empty")));
    }
    Ok(())
}

/// Runs the jobs, the first on this thread and the others on scoped threads.
fn run_parallel<T: Send>(jobs: Vec<impl FnOnce() -> T + Send>) -> Vec<T> {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else { return Vec::new() };
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs.map(|job| s.spawn(job)).collect();
        let mut results = vec![first()];
        for h in handles {
            results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        results
    })
}
