//! The store: batch SET / GET / EXISTS over pools of connections, large batches split across
//! several connections that run in parallel, a dropped connection re-established and the batch's
//! unfinished keys retried once. Against a Valkey Cluster, keys are routed by hash slot to the
//! primary that owns them, each node's share runs in parallel, and after a redirection (`MOVED`,
//! `ASK`) or a lost node the slot map is read again and the failed keys are retried once.

use crate::cluster;
use crate::config::Config;
use crate::conn::{server_name, Conn};
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{self, LaneError};
use crate::stats::{self, Counters, Op, Stats};
use crate::Outcome;
use parking_lot::{Mutex, RwLock};
use std::io::IoSlice;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
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

    /// Moves the segments of the values `idx` out (leaving empty slices in their place), in
    /// that order; [`ReadTargets::put_back`] returns them.
    fn take_values(&mut self, idx: &[usize]) -> ReadTargets<'a> {
        let count = idx.iter().map(|i| self.bounds[i + 1] - self.bounds[*i]).sum();
        let mut part = ReadTargets::with_capacity(idx.len(), count);
        for i in idx {
            part.push_value(self.segments[self.bounds[*i]..self.bounds[i + 1]].iter_mut().map(std::mem::take));
        }
        part
    }

    /// Puts back what [`ReadTargets::take_values`] took out.
    fn put_back(&mut self, idx: &[usize], part: ReadTargets<'a>) {
        let mut segments = part.segments.into_iter();
        for i in idx {
            for j in self.bounds[*i]..self.bounds[i + 1] {
                self.segments[j] = segments.next().expect("as many segments as were taken");
            }
        }
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

/// One server: its pool of data connections and its control connection.
struct Node {
    host: String,
    port: u16,
    name: String,
    pool: Mutex<Vec<Conn>>,
    /// The `redis` crate's connection, for INFO / SCAN / UNLINK / CLUSTER SLOTS.
    control: Mutex<Option<redis::Connection>>,
}

impl Node {
    fn new(host: &str, port: u16) -> Arc<Node> {
        Arc::new(Node {
            host: host.to_string(),
            port,
            name: server_name(host, port),
            pool: Mutex::new(Vec::new()),
            control: Mutex::new(None),
        })
    }
}

/// Where keys go: one server, or a cluster's primaries by hash slot.
struct Topology {
    nodes: Vec<Arc<Node>>,
    /// Cluster mode: the index in `nodes` of each slot's primary (`None`: no primary).
    slots: Option<Vec<Option<u16>>>,
}

impl Topology {
    /// Groups key indices by node: `(node index, key indices)`; keys of unserved slots come
    /// back in the second list.
    fn route(&self, prefix: &[u8], keys: &[&[u8]]) -> (Vec<(usize, Vec<usize>)>, Vec<usize>) {
        let Some(slots) = &self.slots else {
            return (vec![(0, (0..keys.len()).collect())], Vec::new());
        };
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        let mut unserved = Vec::new();
        let mut full = Vec::with_capacity(prefix.len() + 128);
        for (i, k) in keys.iter().enumerate() {
            full.clear();
            full.extend_from_slice(prefix);
            full.extend_from_slice(k);
            match slots[cluster::slot(&full) as usize] {
                Some(n) => groups[n as usize].push(i),
                None => unserved.push(i),
            }
        }
        let groups = groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).collect();
        (groups, unserved)
    }
}

/// A handle on a Valkey server (or cluster) for one namespace. `Send + Sync`: share it between
/// threads.
pub struct Store {
    cfg: Config,
    topology: RwLock<Arc<Topology>>,
    /// Set when a redirection or a lost connection suggests the cluster's slot map changed.
    stale: AtomicBool,
    /// Nodes (`host:port`) that refused connections since the slot map was last read.
    down: Mutex<Vec<String>>,
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
    /// Connects (one connection, to check the server and the credentials now) and finds out
    /// whether the server is part of a cluster; if so, reads its slot map.
    pub fn open(cfg: Config) -> Result<Store> {
        tracing::debug!(config = ?cfg, "opening store");
        let seed = Node::new(&cfg.host, cfg.port);
        let conn = Conn::connect(&cfg, &seed.host, seed.port)?;
        seed.pool.lock().push(conn);
        let store = Store {
            topology: RwLock::new(Arc::new(Topology { nodes: vec![seed.clone()], slots: None })),
            cfg,
            stale: AtomicBool::new(false),
            down: Mutex::new(Vec::new()),
            counters: Counters::default(),
            broken: AtomicBool::new(false),
            active_lanes: AtomicUsize::new(0),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if let Some(ranges) = store.cluster_slots(&seed)? {
            if store.cfg.db != 0 {
                return Err(Error::invalid_config(format!(
                    "db {} requested, but {} is a cluster node and a cluster has only db 0",
                    store.cfg.db,
                    store.cfg.server()
                )));
            }
            store.install_slots(ranges);
        }
        let topo = store.topology();
        tracing::info!(
            server = %store.cfg.server(),
            cluster_primaries = topo.slots.as_ref().map_or(0, |_| topo.nodes.len()),
            prefix = %String::from_utf8_lossy(store.cfg.namespace.prefix()),
            "connected"
        );
        Ok(store)
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the server is a cluster, and how many primaries serve it (0 when it is not).
    pub fn cluster_primaries(&self) -> usize {
        let topo = self.topology();
        topo.slots.as_ref().map_or(0, |_| topo.nodes.len())
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// `CLUSTER SLOTS` at `node`; `None` when the server is not in cluster mode.
    fn cluster_slots(&self, node: &Node) -> Result<Option<Vec<cluster::SlotRange>>> {
        self.with_control(node, |con| match redis::cmd("CLUSTER").arg("SLOTS").query::<redis::Value>(con) {
            Ok(v) => cluster::parse_slots(&v, &node.host).map(Some),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => Ok(None),
            Err(e) => Err(e.into()),
        })
    }

    /// Makes `ranges` the slot map, keeping the pools of nodes that stay.
    fn install_slots(&self, ranges: Vec<cluster::SlotRange>) {
        let old = self.topology();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut slots = vec![None; cluster::SLOTS];
        for r in ranges {
            let index = match nodes.iter().position(|n| n.host == r.host && n.port == r.port) {
                Some(i) => i,
                None => {
                    let node = old.nodes.iter().find(|n| n.host == r.host && n.port == r.port).cloned();
                    nodes.push(node.unwrap_or_else(|| Node::new(&r.host, r.port)));
                    nodes.len() - 1
                }
            };
            slots[r.start as usize..=r.end as usize].fill(Some(index as u16));
        }
        tracing::info!(primaries = nodes.len(), "cluster slot map loaded");
        *self.topology.write() = Arc::new(Topology { nodes, slots: Some(slots) });
    }

    /// Reads the slot map again (cluster mode only). Nodes learn of a failover by gossip, so a
    /// node may still name a primary that just refused our connections: such a view is used only
    /// when no node offers one without it.
    fn refresh_slots(&self) {
        let topo = self.topology();
        if topo.slots.is_none() {
            return;
        }
        let down = std::mem::take(&mut *self.down.lock());
        let seed = Node::new(&self.cfg.host, self.cfg.port);
        let mut fallback = None;
        for node in topo.nodes.iter().chain(std::iter::once(&seed)).filter(|n| !down.contains(&n.name)) {
            match self.cluster_slots(node) {
                Ok(Some(ranges)) => {
                    if !ranges.iter().any(|r| down.contains(&server_name(&r.host, r.port))) {
                        self.install_slots(ranges);
                        return;
                    }
                    fallback.get_or_insert(ranges);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(node = %node.name, error = %e, "cannot read the slot map here"),
            }
        }
        match fallback {
            Some(ranges) => self.install_slots(ranges),
            None => tracing::warn!("no cluster node answered CLUSTER SLOTS; keeping the old slot map"),
        }
    }

    fn take_conn(&self, node: &Node) -> Result<Conn> {
        if let Some(c) = node.pool.lock().pop() {
            return Ok(c);
        }
        self.connect(node)
    }

    /// A new connection; counted as a reconnect when one failed before.
    fn connect(&self, node: &Node) -> Result<Conn> {
        let conn = Conn::connect(&self.cfg, &node.host, node.port)?;
        if self.broken.swap(false, Relaxed) {
            self.counters.reconnects.fetch_add(1, Relaxed);
            tracing::info!(server = %node.name, "reconnected");
        }
        Ok(conn)
    }

    fn put_conn(&self, node: &Node, conn: Conn) {
        let mut pool = node.pool.lock();
        if pool.len() < 2 * self.cfg.connections + 4 {
            pool.push(conn);
        }
    }

    /// Runs `op` on a pooled connection to `node` with a deadline for `bytes`; after a dropped
    /// connection, empties the pool (its other connections are likely dead too) and goes on once
    /// more from where it stopped on a new connection. All our commands are idempotent, so a
    /// retry is safe.
    fn run_lane(&self, node: &Node, bytes: u64, mut op: impl FnMut(&mut Conn, usize) -> std::result::Result<Option<Error>, LaneError>) -> LaneEnd {
        let mut done = 0;
        let mut retried = false;
        let running = self.active_lanes.fetch_add(1, Relaxed) + 1;
        let _slot = LaneSlot(&self.active_lanes);
        let spin = if running < self.cores { SPIN } else { Duration::ZERO };
        loop {
            let conn = if retried { self.connect(node) } else { self.take_conn(node) };
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    self.stale.store(true, Relaxed);
                    if e.kind() == ErrorKind::Connection {
                        let mut down = self.down.lock();
                        if !down.contains(&node.name) {
                            down.push(node.name.clone());
                        }
                    }
                    return LaneEnd { key_error: None, failed: Some((done, e)) };
                }
            };
            conn.set_deadline(Some(Instant::now() + self.cfg.request_timeout(bytes)));
            conn.set_spin(spin);
            let result = op(&mut conn, done);
            if conn.take_redirect() {
                self.stale.store(true, Relaxed);
            }
            match result {
                Ok(key_error) => {
                    conn.set_deadline(None);
                    self.put_conn(node, conn);
                    return LaneEnd { key_error, failed: None };
                }
                Err(LaneError { error, done: d }) => {
                    tracing::warn!(error = %error, "connection failed");
                    done = d;
                    if error.kind() == ErrorKind::Connection {
                        self.broken.store(true, Relaxed);
                        self.stale.store(true, Relaxed);
                    }
                    if error.kind() == ErrorKind::Connection && !retried {
                        node.pool.lock().clear();
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

    /// Turns the lanes' ends into per-key failure outcomes. Returns the first error and whether
    /// no key got an answer because no connection could be made at all.
    fn finish(ends: Vec<(Range<usize>, LaneEnd)>, outcomes: &mut [Outcome]) -> (Option<Error>, bool) {
        let mut first_error = None;
        let mut all_unreachable = !ends.is_empty();
        for (range, end) in ends {
            if let Some(e) = end.key_error {
                first_error.get_or_insert(e);
            }
            match end.failed {
                Some((done, e)) => {
                    all_unreachable &= done == 0 && matches!(e.kind(), ErrorKind::Connection | ErrorKind::Auth);
                    let outcome = if e.kind() == ErrorKind::Timeout { Outcome::Timeout } else { Outcome::IoError };
                    outcomes[range.start + done..range.end].fill(outcome);
                    first_error.get_or_insert(e);
                }
                None => all_unreachable = false,
            }
        }
        (first_error, all_unreachable)
    }

    /// Runs `on_node(node, key indices, outcomes of those keys)` for each node's share of
    /// `keys` (in parallel when there are several nodes) and writes the outcomes back. In
    /// cluster mode, when a redirection or a lost connection was seen, reads the slot map again
    /// and runs the failed keys once more. The call fails as a whole only when no key could be
    /// sent anywhere.
    fn routed<F>(&self, keys: &[&[u8]], outcomes: &mut [Outcome], on_node: F) -> Result<BatchReport>
    where
        F: Fn(&Node, &[usize], &mut [Outcome]) -> (Option<Error>, bool) + Sync,
    {
        if self.stale.swap(false, Relaxed) {
            self.refresh_slots();
        }
        let all: Vec<usize> = (0..keys.len()).collect();
        let (mut first_error, mut unreachable) = self.route_once(keys, &all, outcomes, &on_node);
        if self.stale.swap(false, Relaxed) && self.topology().slots.is_some() {
            let retry: Vec<usize> =
                (0..keys.len()).filter(|i| matches!(outcomes[*i], Outcome::ServerError | Outcome::IoError)).collect();
            if !retry.is_empty() {
                self.refresh_slots();
                tracing::info!(keys = retry.len(), "retrying keys after a cluster topology change");
                let (e, u) = self.route_once(keys, &retry, outcomes, &on_node);
                first_error = e.or(first_error);
                // Whole-call failure only if neither pass reached any node.
                unreachable &= u;
            }
        }
        let failed = outcomes.iter().filter(|o| o.is_failure()).count();
        self.counters.errors.fetch_add(failed as u64, Relaxed);
        if unreachable {
            return Err(first_error.expect("an unreachable node gave an error"));
        }
        Ok(BatchReport { failed, first_error: if failed > 0 { first_error } else { None } })
    }

    /// One routing pass over the keys `which`.
    fn route_once<F>(&self, keys: &[&[u8]], which: &[usize], outcomes: &mut [Outcome], on_node: &F) -> (Option<Error>, bool)
    where
        F: Fn(&Node, &[usize], &mut [Outcome]) -> (Option<Error>, bool) + Sync,
    {
        let topo = self.topology();
        let subset: Vec<&[u8]> = which.iter().map(|i| keys[*i]).collect();
        let (groups, unserved) = topo.route(self.cfg.namespace.prefix(), &subset);
        let mut first_error = None;
        for i in &unserved {
            outcomes[which[*i]] = Outcome::ServerError;
        }
        if !unserved.is_empty() {
            self.stale.store(true, Relaxed);
            first_error = Some(Error::new(ErrorKind::Server, "no cluster primary serves the slot of some keys (cluster down?)"));
        }
        let jobs: Vec<_> = groups
            .into_iter()
            .map(|(node, idx)| {
                let node = topo.nodes[node].clone();
                let idx: Vec<usize> = idx.into_iter().map(|i| which[i]).collect();
                let on_node = &on_node;
                move || {
                    let mut out = vec![Outcome::Miss; idx.len()];
                    let (e, u) = on_node(&node, &idx, &mut out);
                    (idx, out, e, u)
                }
            })
            .collect();
        let mut all_unreachable = unserved.is_empty();
        for (idx, out, e, u) in run_parallel(jobs) {
            for (i, o) in idx.iter().zip(out) {
                outcomes[*i] = o;
            }
            if let Some(e) = e {
                first_error.get_or_insert(e);
            }
            all_unreachable &= u;
        }
        (first_error, all_unreachable)
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
        let report = self.routed(keys, outcomes, |node, idx, out| {
            let keys: Vec<&[u8]> = idx.iter().map(|i| keys[*i]).collect();
            let values: Vec<&[IoSlice<'_>]> = idx.iter().map(|i| values[*i]).collect();
            let sizes: Vec<u64> = idx.iter().map(|i| sizes[*i]).collect();
            self.set_on(node, &keys, &values, &sizes, out)
        });
        let stored = outcomes.iter().zip(&sizes).filter(|(o, _)| **o == Outcome::Ok);
        let (pages, bytes) = stored.fold((0, 0), |(p, b), (_, s)| (p + 1, b + s));
        self.counters.pages_written.fetch_add(pages, Relaxed);
        self.counters.bytes_written.fetch_add(bytes, Relaxed);
        self.counters.record(Op::Set, started.elapsed());
        report
    }

    fn set_on(&self, node: &Node, keys: &[&[u8]], values: &[&[IoSlice<'_>]], sizes: &[u64], outcomes: &mut [Outcome]) -> (Option<Error>, bool) {
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
                self.run_lane(node, bytes, |conn, done| {
                    pipeline::set(conn, cfg, keys, values, sizes, mine, done)
                })
            });
        }
        let ends = lanes.into_iter().zip(run_parallel(jobs)).collect();
        Self::finish(ends, outcomes)
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
        // Each node's share of the targets is moved out for the call and put back afterwards.
        let parked = Mutex::new(&mut *targets);
        let report = self.routed(keys, outcomes, |node, idx, out| {
            let mut part = parked.lock().take_values(idx);
            let keys: Vec<&[u8]> = idx.iter().map(|i| keys[*i]).collect();
            let sizes: Vec<u64> = idx.iter().map(|i| sizes[*i]).collect();
            let result = self.get_on(node, &keys, &mut part, &sizes, out);
            parked.lock().put_back(idx, part);
            result
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

    fn get_on(&self, node: &Node, keys: &[&[u8]], targets: &mut ReadTargets<'_>, sizes: &[u64], outcomes: &mut [Outcome]) -> (Option<Error>, bool) {
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
                self.run_lane(node, bytes, |conn, done| {
                    pipeline::get(conn, cfg, keys, (&mut *segs, &bounds), sizes, mine, done)
                })
            });
        }
        let ends = lanes.into_iter().zip(run_parallel(jobs)).collect();
        Self::finish(ends, outcomes)
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
        let report = self.routed(keys, &mut outcomes, |node, idx, out| {
            let keys: Vec<&[u8]> = idx.iter().map(|i| keys[*i]).collect();
            let lanes = self.lanes(std::iter::repeat_n(1, keys.len()), LANE_MIN_KEYS as u64);
            let mut jobs = Vec::with_capacity(lanes.len());
            let mut rest = &mut *out;
            for range in &lanes {
                let (mine, tail) = rest.split_at_mut(range.len());
                rest = tail;
                let keys = &keys[range.clone()];
                let prefix = self.cfg.namespace.prefix();
                jobs.push(move || self.run_lane(node, 0, |conn, done| pipeline::exists(conn, prefix, keys, mine, done)));
            }
            let ends = lanes.into_iter().zip(run_parallel(jobs)).collect();
            Self::finish(ends, out)
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
        let node = self.topology().nodes[0].clone();
        let started = Instant::now();
        let end = self.run_lane(&node, 0, |conn, _| match conn.command(&[b"PING"]) {
            Ok(crate::conn::Reply::Simple(_) | crate::conn::Reply::Ok) => Ok(None),
            Ok(other) => Err(LaneError { error: Error::protocol(format!("PING answered with {other:?}")), done: 0 }),
            Err(error) => Err(LaneError { error, done: 0 }),
        });
        match end.failed {
            Some((_, e)) => Err(e),
            None => Ok(started.elapsed()),
        }
    }

    /// Runs `f` on `node`'s control connection (the `redis` crate's, for INFO / SCAN / UNLINK /
    /// CLUSTER SLOTS), opening it if needed. A connection that fails is dropped; after a dropped
    /// connection `f` runs once more on a new one (all these commands are safe to repeat).
    fn with_control<T>(&self, node: &Node, mut f: impl FnMut(&mut redis::Connection) -> Result<T>) -> Result<T> {
        let mut slot = node.control.lock();
        let mut retried = false;
        loop {
            if slot.is_none() {
                *slot = Some(self.control_connection(node).map_err(|e| Error::new(e.kind(), format!("{} ({})", e.message(), node.name)))?);
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
                    return Err(Error::new(e.kind(), format!("{} ({})", e.message(), node.name)));
                }
            }
        }
    }

    fn control_connection(&self, node: &Node) -> Result<redis::Connection> {
        let mut redis_info = redis::RedisConnectionInfo::default().set_db(self.cfg.db.into());
        if let Some(u) = &self.cfg.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &self.cfg.password {
            redis_info = redis_info.set_password(p);
        }
        let info = redis::IntoConnectionInfo::into_connection_info((node.host.clone(), node.port))?.set_redis_settings(redis_info);
        let con = redis::Client::open(info)?.get_connection_with_timeout(self.cfg.connect_timeout)?;
        con.set_read_timeout(Some(self.cfg.io_timeout))?;
        con.set_write_timeout(Some(self.cfg.io_timeout))?;
        Ok(con)
    }

    /// Server statistics (summed over a cluster's primaries) and this handle's counters.
    pub fn stats(&self) -> Result<Stats> {
        if self.stale.swap(false, Relaxed) {
            self.refresh_slots();
        }
        let topo = self.topology();
        let pattern = self.cfg.namespace.model_pattern();
        let mut per_node = Vec::with_capacity(topo.nodes.len());
        for node in &topo.nodes {
            per_node.push(self.with_control(node, |con| stats::server_stats(con, &pattern))?);
        }
        let mut server = stats::ServerStats::sum(per_node);
        server.cluster_primaries = topo.slots.as_ref().map_or(0, |_| topo.nodes.len() as u64);
        Ok(Stats { server, client: self.counters.snapshot() })
    }

    /// This handle's counters only (no server round trip).
    pub fn client_stats(&self) -> crate::stats::ClientStats {
        self.counters.snapshot()
    }

    /// Deletes every key of this model (all ranks, this database, every primary of a cluster);
    /// returns how many.
    pub fn clear(&self) -> Result<u64> {
        if self.stale.swap(false, Relaxed) {
            self.refresh_slots();
        }
        let pattern = self.cfg.namespace.model_pattern();
        let mut n = 0;
        for node in &self.topology().nodes {
            n += self.with_control(node, |con| stats::scan_keys(con, &pattern, true))?;
        }
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
