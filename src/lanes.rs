//! Lanes: a node's share of a batch split into contiguous ranges, each run on connections of its
//! own (one, or two for large GET values) in parallel, with a dropped connection retried once
//! from where it stopped.

use crate::error::{Error, ErrorKind};
use crate::node::Node;
use crate::pipeline::LaneError;
use crate::Outcome;
use std::ops::Range;
use std::time::Instant;

/// What one pass over some keys learned, besides their outcomes (indices are the call's).
#[derive(Debug, Default)]
pub struct Pass {
    pub first_error: Option<Error>,
    /// No key got an answer because no connection could be made at all.
    pub unreachable: bool,
    /// Some key got `MOVED`: the slot map is stale.
    pub moved: bool,
    /// Some connection failed (in a cluster, maybe a failover).
    pub conn_failed: bool,
    /// Keys redirected by `ASK`, with the node named.
    pub asks: Vec<(usize, String)>,
    /// batch_get keys whose segments were partly written by an attempt that then failed.
    pub torn: Vec<usize>,
}

impl Pass {
    /// Adds what `other` learned (a later pass over other or the same keys).
    pub fn merge(&mut self, other: Pass) {
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.moved |= other.moved;
        self.conn_failed |= other.conn_failed;
        self.asks.extend(other.asks);
        self.torn.extend(other.torn);
    }
}

/// How one lane ended (indices relative to the lane).
pub struct LaneEnd {
    pub key_error: Option<Error>,
    /// Keys from this index on were not done because of this error.
    pub failed: Option<(usize, Error)>,
    pub moved: bool,
    pub asks: Vec<(usize, String)>,
    pub torn: Vec<usize>,
}

/// What a lane needs of the store around it.
pub trait LaneHost: Sync {
    /// A connection to `node` (pooled unless `fresh`), made by `deadline`.
    fn conn(&self, node: &Node, fresh: bool, deadline: Instant) -> crate::Result<crate::conn::Conn>;
    /// Gives a connection back after a lane that ended cleanly.
    fn put(&self, node: &Node, conn: crate::conn::Conn);
    /// Called when a connection to `node` failed (`made`: it had been established).
    fn conn_failed(&self, node: &Node, error: &Error, made: bool);
    /// Whether this lane may poll its socket (see `Conn::set_spin`), and its slot while it runs.
    fn lane_started(&self) -> (std::time::Duration, LaneSlot<'_>);
}

/// Counts a running lane for as long as it lives.
pub struct LaneSlot<'a>(pub &'a std::sync::atomic::AtomicUsize);

impl Drop for LaneSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `op(conns, done)` for one lane by `deadline`, on `fan` connections to `node` (fewer when
/// the later ones cannot be made; at least one). After a dropped connection, empties the node's
/// pool and goes on once more from where it stopped on new connections (all our commands are
/// idempotent, so a retry is safe). The retry keeps the call's deadline.
pub fn run_lane(
    host: &impl LaneHost,
    node: &Node,
    deadline: Instant,
    asking: bool,
    fan: usize,
    mut op: impl FnMut(&mut [crate::conn::Conn], usize) -> Result<Option<Error>, LaneError>,
) -> LaneEnd {
    let mut end = LaneEnd { key_error: None, failed: None, moved: false, asks: Vec::new(), torn: Vec::new() };
    let mut done = 0;
    let mut retried = false;
    let (spin, _slot) = host.lane_started();
    let fan = fan.max(1);
    loop {
        let mut conns = Vec::with_capacity(fan);
        while conns.len() < fan {
            match host.conn(node, retried, deadline) {
                Ok(c) => conns.push(c),
                Err(e) if conns.is_empty() => {
                    host.conn_failed(node, &e, false);
                    end.failed = Some((done, e));
                    return end;
                }
                Err(e) => {
                    // The lane goes on with the connections it has.
                    tracing::debug!(server = %node.name, error = %e, "no extra connection for a fanned lane");
                    break;
                }
            }
        }
        for conn in &mut conns {
            conn.set_deadline(Some(deadline));
            conn.set_spin(spin);
            conn.set_asking(asking);
        }
        let result = op(&mut conns, done);
        for conn in &mut conns {
            let redirects = std::mem::take(&mut conn.redirects);
            end.moved |= redirects.moved;
            end.asks.extend(redirects.asks);
        }
        match result {
            Ok(key_error) => {
                for mut conn in conns {
                    conn.set_deadline(None);
                    host.put(node, conn);
                }
                end.key_error = key_error;
                return end;
            }
            Err(LaneError { error, done: d, torn }) => {
                tracing::warn!(error = %error, "connection failed");
                done = d;
                if torn {
                    end.torn.push(d);
                }
                if error.kind() == ErrorKind::Connection {
                    host.conn_failed(node, &error, true);
                    if !retried && Instant::now() < deadline {
                        node.clear_pool();
                        retried = true;
                        continue;
                    }
                }
                end.failed = Some((done, error));
                return end;
            }
        }
    }
}

/// Splits `0..n` into at most `max` contiguous ranges of similar weight, each worth at least
/// `min_weight`.
pub fn split(weights: impl Iterator<Item = u64> + Clone, min_weight: u64, max: usize) -> Vec<Range<usize>> {
    let n = weights.clone().count();
    let total: u64 = weights.clone().sum();
    let count = (total / min_weight.max(1)).clamp(1, max.max(1) as u64).min(n.max(1) as u64) as usize;
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

/// Turns the lanes' ends into per-key failure outcomes and what the pass learned. `idx[j]` is
/// the call's index of the node's key j; lanes are ranges of `0..idx.len()`.
pub fn finish(ends: Vec<(Range<usize>, LaneEnd)>, outcomes: &mut [Outcome], idx: &[usize]) -> Pass {
    let mut pass = Pass { unreachable: !ends.is_empty(), ..Pass::default() };
    for (range, end) in ends {
        if let Some(e) = end.key_error {
            pass.first_error.get_or_insert(e);
        }
        pass.moved |= end.moved;
        pass.asks.extend(end.asks.into_iter().map(|(i, to)| (idx[range.start + i], to)));
        pass.torn.extend(end.torn.into_iter().map(|i| idx[range.start + i]));
        match end.failed {
            Some((done, e)) => {
                pass.unreachable &= done == 0 && matches!(e.kind(), ErrorKind::Connection | ErrorKind::Auth | ErrorKind::Permission | ErrorKind::Tls);
                pass.conn_failed |= e.kind() == ErrorKind::Connection;
                let outcome = if e.kind() == ErrorKind::Timeout { Outcome::Timeout } else { Outcome::IoError };
                outcomes[range.start + done..range.end].fill(outcome);
                pass.first_error.get_or_insert(e);
            }
            None => pass.unreachable = false,
        }
    }
    pass
}

/// Runs the jobs, the first on this thread and the others on scoped threads.
pub fn run_parallel<T: Send>(jobs: Vec<impl FnOnce() -> T + Send>) -> Vec<T> {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else { return Vec::new() };
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs.map(|job| s.spawn(move || crate::quiet::in_library(job))).collect();
        let mut results = vec![first()];
        for h in handles {
            results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        results
    })
}
