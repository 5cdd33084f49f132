//! The store: the batch entry points (`batch_set`, `batch_get`, `batch_exists`) and the operator
//! calls (`ping`, `stats`, `clear`). A batch call routes its keys to their nodes (`routing`, over
//! the `topology`), splits each node's share into lanes that run in parallel on pooled
//! connections (`lanes`, `node`), and runs the pipelined commands on each (`pipeline`). One
//! deadline bounds the whole call, retries included.

use crate::config::Config;
pub use crate::routing::BatchReport;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind, Result};
use crate::format::HEADER_LEN;
use crate::lanes::{self, LaneHost, LaneSlot};
use crate::node::Node;
use crate::pipeline;
use crate::stats::{self, Counters, Op, Stats};
use crate::targets::ReadTargets;
use crate::routing::{OnNode, Router};
use crate::topology::{self, Topology};
use crate::Outcome;
use parking_lot::Mutex;
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Least bytes worth a connection (and a thread) of their own in one batch.
const LANE_MIN_BYTES: u64 = 4 << 20;
/// Least keys worth a connection of their own in one EXISTS batch.
const LANE_MIN_KEYS: u64 = 4096;
/// How long a lane polls its socket before sleeping in a read, while it has a core to itself.
const SPIN: Duration = Duration::from_micros(50);

/// A handle on a Valkey server (or cluster) for one namespace. `Send + Sync`: share it between
/// threads.
pub struct Store {
    cfg: Config,
    topology: Topology,
    counters: Counters,
    /// Set when a connection failed; the next connection made counts as a reconnect.
    broken: AtomicBool,
    /// Lanes running now, over every thread using this store.
    active_lanes: AtomicUsize,
    /// Cores of this machine: lanes poll their sockets only while fewer lanes than cores run, so
    /// a polling thread never takes a core the server or another lane needs.
    cores: usize,
    /// The smallest `proto-max-bulk-len` of the servers connected to.
    max_bulk: AtomicU64,
    /// Latency-sensitive calls running now (batch_exists, batch_get of at most
    /// [`URGENT_MAX_BYTES`]): bulk writes of other threads hold back while there are any.
    urgent: AtomicUsize,
}

/// Connections a batch_get lane of large values reads over (on its one thread). Measured on 2
/// cores, at steady state, 4 MiB values: +3 to +5 % GB/s over one connection in 4 of 4
/// interleaved runs; smaller values gain nothing (the window keeps several outstanding).
const BIG_VALUE_FAN: usize = 2;

/// A batch_get of at most this many bytes is a prefetch that must not wait behind a backup.
const URGENT_MAX_BYTES: u64 = 4 << 20;

/// Counts a latency-sensitive call for as long as it lives.
struct Urgent<'a>(&'a AtomicUsize);

impl<'a> Urgent<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Relaxed);
        Urgent(n)
    }
}

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl LaneHost for Store {
    fn conn(&self, node: &Node, fresh: bool, deadline: Instant) -> Result<Conn> {
        if !fresh {
            let (pooled, dead) = node.take_pooled();
            if dead {
                // The server dropped pooled connections: the next one made is a reconnect.
                self.broken.store(true, Relaxed);
                tracing::debug!(server = %node.name, "pooled connections were closed by the server");
            }
            if let Some(c) = pooled {
                return Ok(c);
            }
        }
        let conn = node.connect(&self.cfg, deadline)?;
        self.max_bulk.fetch_min(conn.max_bulk(), Relaxed);
        if self.broken.swap(false, Relaxed) {
            self.counters.reconnects.fetch_add(1, Relaxed);
            tracing::info!(server = %node.name, "reconnected");
        }
        Ok(conn)
    }

    fn put(&self, node: &Node, conn: Conn) {
        node.put(conn, 2 * self.cfg.connections * BIG_VALUE_FAN + 4);
    }

    fn conn_failed(&self, node: &Node, error: &Error, made: bool) {
        if error.kind() == ErrorKind::Connection {
            self.broken.store(true, Relaxed);
            if made {
                self.topology.mark_stale();
            } else {
                self.topology.mark_down(node);
            }
        } else if !made {
            self.topology.mark_stale();
        }
    }

    fn lane_started(&self) -> (Duration, LaneSlot<'_>) {
        let running = self.active_lanes.fetch_add(1, Relaxed) + 1;
        let spin = if running < self.cores { SPIN } else { Duration::ZERO };
        (spin, LaneSlot(&self.active_lanes))
    }
}

impl Store {
    /// Connects (one connection, to check the server and the credentials now) and finds out
    /// whether the server is part of a cluster; if so, reads its slot map.
    pub fn open(cfg: Config) -> Result<Store> {
        tracing::debug!(config = ?cfg, "opening store");
        let seed = Node::new(cfg.endpoint());
        let conn = seed.connect(&cfg, Instant::now() + cfg.connect_timeout)?;
        let max_bulk = conn.max_bulk();
        seed.put(conn, 1);
        let store = Store {
            topology: Topology::new(seed.clone()),
            cfg,
            counters: Counters::default(),
            broken: AtomicBool::new(false),
            active_lanes: AtomicUsize::new(0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_bulk: AtomicU64::new(max_bulk),
            urgent: AtomicUsize::new(0),
        };
        if let Some(ranges) = topology::cluster_slots(&seed, &store.cfg)? {
            if store.cfg.db != 0 {
                return Err(Error::invalid_config(format!(
                    "db {} requested, but {} is a cluster node and a cluster has only db 0",
                    store.cfg.db,
                    store.cfg.server()
                )));
            }
            if ranges.is_empty() {
                return Err(Error::new(
                    ErrorKind::Server,
                    format!(
                        "{} is a cluster node, but no node of its cluster serves any hash slot (cluster not set up yet? \
                         assign slots with `valkey-cli --cluster create` or CLUSTER ADDSLOTS)",
                        store.cfg.server()
                    ),
                ));
            }
            store.topology.install(ranges);
        }
        tracing::info!(
            server = %store.cfg.server(),
            cluster_primaries = store.topology.map().primaries(),
            prefix = %String::from_utf8_lossy(store.cfg.namespace.prefix()),
            "connected"
        );
        Ok(store)
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// How many primaries serve the cluster (0 when the server is not a cluster).
    pub fn cluster_primaries(&self) -> usize {
        self.topology.map().primaries()
    }

    /// The deadline of a call that moves `bytes` bytes, starting now.
    fn deadline(&self, bytes: u64) -> Instant {
        Instant::now() + self.cfg.request_timeout(bytes)
    }

    /// Marks keys the server could not take (a key, or `HEADER_LEN` + a value of `sizes[i]`,
    /// longer than `proto-max-bulk-len`) as [`Outcome::TooLarge`] and returns the others.
    fn sendable(&self, keys: &[&[u8]], sizes: Option<&[u64]>, outcomes: &mut [Outcome]) -> (Vec<usize>, Option<Error>) {
        let max = self.max_bulk.load(Relaxed);
        let prefix = self.cfg.namespace.prefix().len() as u64;
        let mut which = Vec::with_capacity(keys.len());
        let mut error = None;
        for (i, k) in keys.iter().enumerate() {
            let value = sizes.map_or(0, |s| s[i].saturating_add(HEADER_LEN as u64));
            if prefix + k.len() as u64 > max || value > max {
                outcomes[i] = Outcome::TooLarge;
                error.get_or_insert_with(|| {
                    let what = if value > max { format!("its value ({} bytes with the header)", value) } else { format!("the key ({} bytes)", prefix + k.len() as u64) };
                    Error::invalid_argument(format!("key {i} not sent: {what} is over the server's proto-max-bulk-len of {max} bytes"))
                });
            } else {
                which.push(i);
            }
        }
        (which, error)
    }

    /// Runs `on_node` for each node's share of the keys `which` (see [`Router::run`]) and counts
    /// the keys that failed.
    fn routed<F: OnNode>(&self, keys: &[&[u8]], which: Vec<usize>, outcomes: &mut [Outcome], deadline: Instant, pre_error: Option<Error>, on_node: F) -> Result<BatchReport> {
        let report = Router { topology: &self.topology, cfg: &self.cfg }.run(keys, which, outcomes, deadline, pre_error, on_node);
        let failed = outcomes.iter().filter(|o| o.is_failure()).count();
        self.counters.errors.fetch_add(failed as u64, Relaxed);
        report
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
        let deadline = self.deadline(sizes.iter().sum());
        let (which, too_large) = self.sendable(keys, Some(&sizes), outcomes);
        let skipped = pipeline::Skipped::default();
        let multi_key = self.topology.map().primaries() == 0;
        let report = self.routed(keys, which, outcomes, deadline, too_large, |node, idx, out, asking| {
            let keys: Vec<&[u8]> = idx.iter().map(|i| keys[*i]).collect();
            let values: Vec<&[IoSlice<'_>]> = idx.iter().map(|i| values[*i]).collect();
            let sizes: Vec<u64> = idx.iter().map(|i| sizes[*i]).collect();
            let ranges = lanes::split(sizes.iter().copied(), LANE_MIN_BYTES, self.cfg.connections);
            let mut jobs = Vec::with_capacity(ranges.len());
            let mut rest = &mut *out;
            for range in &ranges {
                let (mine, tail) = rest.split_at_mut(range.len());
                rest = tail;
                let (keys, values, sizes) = (&keys[range.clone()], &values[range.clone()], &sizes[range.clone()]);
                let cfg = &self.cfg;
                let skipped = &skipped;
                jobs.push(move || {
                    let mut skip = if cfg.skip_existing { vec![false; keys.len()] } else { Vec::new() };
                    lanes::run_lane(self, node, deadline, asking, 1, |conns, done| {
                        let conn = &mut conns[0];
                        if cfg.skip_existing {
                            pipeline::probe(conn, cfg, keys, sizes, &mut skip, multi_key, done)?;
                        }
                        pipeline::set(conn, cfg, keys, values, sizes, pipeline::SetShared { skip: &skip, skipped, urgent: &self.urgent }, mine, done)
                    })
                });
            }
            let ends = ranges.into_iter().zip(lanes::run_parallel(jobs)).collect();
            lanes::finish(ends, out, idx)
        });
        let stored = outcomes.iter().zip(&sizes).filter(|(o, _)| **o == Outcome::Ok);
        let (pages, bytes) = stored.fold((0, 0), |(p, b), (_, s)| (p + 1, b + s));
        let (skipped_pages, skipped_bytes) = (skipped.pages.load(Relaxed), skipped.bytes.load(Relaxed));
        if skipped_pages > 0 {
            tracing::debug!(pages = skipped_pages, bytes = skipped_bytes, "batch_set skipped keys already stored");
        }
        let (pages, bytes) = (pages - skipped_pages.min(pages), bytes - skipped_bytes.min(bytes));
        self.counters.pages_written.fetch_add(pages, Relaxed);
        self.counters.bytes_written.fetch_add(bytes, Relaxed);
        self.counters.record(Op::Set, started.elapsed());
        report
    }

    /// Reads the value of `keys[i]` into `targets`' value i. `outcomes[i]` is [`Outcome::Ok`] only
    /// when exactly the stored bytes were written into the segments; see [`Outcome`] for which
    /// outcomes leave the segments untouched.
    pub fn batch_get(&self, keys: &[&[u8]], targets: &mut ReadTargets<'_>, outcomes: &mut [Outcome]) -> Result<BatchReport> {
        check_batch(keys, targets.len(), outcomes.len())?;
        if keys.is_empty() {
            return Ok(BatchReport::default());
        }
        let started = Instant::now();
        let sizes: Vec<u64> = (0..targets.len()).map(|i| targets.value_len(i)).collect();
        let deadline = self.deadline(sizes.iter().sum());
        let _urgent = (sizes.iter().sum::<u64>() <= URGENT_MAX_BYTES).then(|| Urgent::new(&self.urgent));
        let (which, too_large) = self.sendable(keys, None, outcomes);
        // Each node's share of the targets is moved out for the call and put back afterwards.
        let parked = Mutex::new(&mut *targets);
        let report = self.routed(keys, which, outcomes, deadline, too_large, |node, idx, out, asking| {
            let mut part = parked.lock().take_values(idx);
            let keys: Vec<&[u8]> = idx.iter().map(|i| keys[*i]).collect();
            let sizes: Vec<u64> = idx.iter().map(|i| sizes[*i]).collect();
            let ranges = lanes::split(sizes.iter().copied(), LANE_MIN_BYTES, self.cfg.connections);
            let mut jobs = Vec::with_capacity(ranges.len());
            let mut rest_out = &mut *out;
            let mut rest_segs = &mut part.segments[..];
            for range in &ranges {
                let (mine, tail) = rest_out.split_at_mut(range.len());
                rest_out = tail;
                let base = part.bounds[range.start];
                let (segs, tail) = rest_segs.split_at_mut(part.bounds[range.end] - base);
                rest_segs = tail;
                let bounds: Vec<usize> = part.bounds[range.start..=range.end].iter().map(|b| b - base).collect();
                let (keys, sizes) = (&keys[range.clone()], &sizes[range.clone()]);
                let cfg = &self.cfg;
                // Values that fill half the window or more leave at most one GET outstanding on
                // a connection: two connections keep two (see `pipeline::get`).
                let big = sizes.iter().sum::<u64>() >= keys.len() as u64 * (cfg.get_window as u64 / 2);
                let fan = if big && keys.len() > 1 { BIG_VALUE_FAN } else { 1 };
                jobs.push(move || {
                    lanes::run_lane(self, node, deadline, asking, fan, |conns, done| pipeline::get(conns, cfg, keys, (&mut *segs, &bounds), sizes, mine, done))
                });
            }
            let ends = ranges.into_iter().zip(lanes::run_parallel(jobs)).collect();
            let pass = lanes::finish(ends, out, idx);
            parked.lock().put_back(idx, part);
            pass
        });
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
    /// the first. A key whose request failed counts as not found (and ends the leading run).
    pub fn batch_exists(&self, keys: &[&[u8]], found: &mut [bool]) -> Result<(usize, BatchReport)> {
        check_batch(keys, found.len(), found.len())?;
        if keys.is_empty() {
            return Ok((0, BatchReport::default()));
        }
        let started = Instant::now();
        let mut outcomes = vec![Outcome::Miss; keys.len()];
        let deadline = self.deadline(0);
        let _urgent = Urgent::new(&self.urgent);
        let (which, too_large) = self.sendable(keys, None, &mut outcomes);
        let report = self.routed(keys, which, &mut outcomes, deadline, too_large, |node, idx, out, asking| {
            let keys: Vec<&[u8]> = idx.iter().map(|i| keys[*i]).collect();
            let ranges = lanes::split(std::iter::repeat_n(1, keys.len()), LANE_MIN_KEYS, self.cfg.connections);
            let mut jobs = Vec::with_capacity(ranges.len());
            let mut rest = &mut *out;
            for range in &ranges {
                let (mine, tail) = rest.split_at_mut(range.len());
                rest = tail;
                let keys = &keys[range.clone()];
                let prefix = self.cfg.namespace.prefix();
                jobs.push(move || lanes::run_lane(self, node, deadline, asking, 1, |conns, done| pipeline::exists(&mut conns[0], prefix, keys, mine, done)));
            }
            let ends = ranges.into_iter().zip(lanes::run_parallel(jobs)).collect();
            lanes::finish(ends, out, idx)
        });
        for (f, o) in found.iter_mut().zip(&outcomes) {
            *f = *o == Outcome::Ok;
        }
        let report = report?;
        let hits = found.iter().filter(|f| **f).count() as u64;
        self.counters.exists_hits.fetch_add(hits, Relaxed);
        self.counters.exists_misses.fetch_add(keys.len() as u64 - hits, Relaxed);
        self.counters.record(Op::Exists, started.elapsed());
        Ok((found.iter().take_while(|f| **f).count(), report))
    }

    /// One PING round trip on a data connection (to the first node of a cluster).
    pub fn ping(&self) -> Result<Duration> {
        let node = self.topology.map().nodes.first().cloned().ok_or_else(|| Error::new(ErrorKind::Server, "no cluster node serves any slot"))?;
        let started = Instant::now();
        let end = lanes::run_lane(self, &node, self.deadline(0), false, 1, |conns, _| {
            let conn = &mut conns[0];
            let lane_error = |error| pipeline::LaneError { error, done: 0, torn: false };
            match conn.command(&[b"PING"], self.deadline(0)) {
                Ok(crate::resp::Value::Simple(_) | crate::resp::Value::Ok) => Ok(None),
                Ok(crate::resp::Value::Error(e)) => Err(lane_error(Error::from_server_reply(&e, conn.server()))),
                Ok(other) => Err(lane_error(Error::protocol(format!("PING answered with {other:?}")))),
                Err(error) => Err(lane_error(error)),
            }
        });
        match end.failed {
            Some((_, e)) => Err(e),
            None => Ok(started.elapsed()),
        }
    }

    /// Server statistics (summed over a cluster's primaries; primaries that cannot be reached are
    /// counted in `unreachable_primaries`) and this handle's counters. Fails only when no server
    /// answers.
    pub fn stats(&self) -> Result<Stats> {
        self.topology.refresh_if_stale(&self.cfg);
        let map = self.topology.map();
        let pattern = self.cfg.namespace.model_pattern();
        let mut per_node = Vec::with_capacity(map.nodes.len());
        let mut first_error = None;
        for node in &map.nodes {
            match node.control(&self.cfg, |conn| stats::server_stats(conn, &pattern, self.cfg.io_timeout)) {
                Ok(s) => per_node.push(s),
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "no stats from this node");
                    first_error.get_or_insert(e);
                }
            }
        }
        if per_node.is_empty() {
            return Err(first_error.unwrap_or_else(|| Error::new(ErrorKind::Server, "no server to read stats from")));
        }
        let unreachable = map.nodes.len() - per_node.len();
        let mut server = stats::ServerStats::sum(per_node);
        server.cluster_primaries = map.primaries() as u64;
        server.unreachable_primaries = unreachable as u64;
        Ok(Stats { server, client: self.counters.snapshot() })
    }

    /// This handle's counters only (no server round trip).
    pub fn client_stats(&self) -> crate::stats::ClientStats {
        self.counters.snapshot()
    }

    /// Deletes every key of this model (all ranks, this database, every primary of a cluster);
    /// returns how many. Each SCAN page and its UNLINK must finish within the request timeout.
    pub fn clear(&self) -> Result<u64> {
        self.topology.refresh_if_stale(&self.cfg);
        let pattern = self.cfg.namespace.model_pattern();
        let mut n = 0;
        for node in &self.topology.map().nodes {
            n += node.control(&self.cfg, |conn| stats::unlink_keys(conn, &pattern, self.cfg.io_timeout))?;
        }
        tracing::info!(model = %self.cfg.namespace.model(), keys = n, "cleared");
        Ok(n)
    }
}

fn check_batch(keys: &[&[u8]], values: usize, outcomes: usize) -> Result<()> {
    if values != keys.len() || outcomes != keys.len() {
        return Err(Error::invalid_argument(format!("{} keys but {values} values and {outcomes} outcome slots", keys.len())));
    }
    if let Some(i) = keys.iter().position(|k| k.is_empty()) {
        return Err(Error::invalid_argument(format!("key {i} is empty")));
    }
    Ok(())
}
