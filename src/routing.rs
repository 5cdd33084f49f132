//! Routing one batch call: which node each key goes to, in parallel over the nodes, with the
//! cluster's redirections followed. `ASK` is followed once per key; when this call's lanes saw
//! `MOVED` or a failed connection, the slot map is read again and the failed keys run once more.
//! The store's batch entry points (`store`) give the per-node work as an [`OnNode`] closure.

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::lanes::{self, Pass};
use crate::node::Node;
use crate::socket::Endpoint;
use crate::topology::Topology;
use crate::Outcome;
use std::sync::Arc;
use std::time::Instant;

/// How a batch went, besides the per-key outcomes.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Keys whose outcome is a failure (not a miss): timeouts, I/O and server errors.
    pub failed: usize,
    /// The first such failure, for the caller's error message.
    pub first_error: Option<Error>,
}

/// The per-node work of a batch: `(node, key indices, their outcomes, asking)` runs the keys on
/// that node (after `ASKING` when `asking`) and says what the lanes saw.
pub trait OnNode: Fn(&Node, &[usize], &mut [Outcome], bool) -> Pass + Sync {}
impl<F: Fn(&Node, &[usize], &mut [Outcome], bool) -> Pass + Sync> OnNode for F {}

/// The routing passes of one call, over the store's topology.
pub struct Router<'a> {
    pub topology: &'a Topology,
    pub cfg: &'a Config,
}

impl Router<'_> {
    /// Runs `on_node(node, key indices, their outcomes, asking)` for each node's share of the keys
    /// `which` (in parallel when there are several nodes) and writes the outcomes back. Follows
    /// `ASK` once per key; in cluster mode, when this call's lanes saw `MOVED` or a failed
    /// connection, reads the slot map again and runs the failed keys once more. The call fails as
    /// a whole only when no key could be sent anywhere.
    pub fn run<F: OnNode>(&self, keys: &[&[u8]], which: Vec<usize>, outcomes: &mut [Outcome], deadline: Instant, pre_error: Option<Error>, on_node: F) -> Result<BatchReport> {
        self.topology.refresh_if_stale(self.cfg);
        let mut pass = self.route_once(keys, &which, outcomes, &on_node);
        let mut unreachable = pass.unreachable && !which.is_empty();
        let asks = std::mem::take(&mut pass.asks);
        pass.merge(self.follow_asks(asks, outcomes, &on_node));
        if self.topology.is_cluster() && (pass.moved || pass.conn_failed) && Instant::now() < deadline {
            let retry: Vec<usize> = which.iter().copied().filter(|i| matches!(outcomes[*i], Outcome::ServerError | Outcome::IoError)).collect();
            if !retry.is_empty() {
                self.topology.refresh(self.cfg);
                tracing::info!(keys = retry.len(), "retrying keys after a cluster topology change");
                let mut again = self.route_once(keys, &retry, outcomes, &on_node);
                unreachable &= again.unreachable;
                let asks = std::mem::take(&mut again.asks);
                again.first_error = again.first_error.or(pass.first_error.take());
                pass.merge(again);
                pass.merge(self.follow_asks(asks, outcomes, &on_node));
            }
        }
        // A key whose segments were partly written and that then turned out absent (or of
        // another kind of miss) must not read as a clean miss: its segments are not untouched.
        for &i in &pass.torn {
            if outcomes[i].segments_untouched() {
                outcomes[i] = Outcome::IoError;
            }
        }
        let failed = outcomes.iter().filter(|o| o.is_failure()).count();
        let first_error = pass.first_error.or(pre_error);
        if unreachable {
            return Err(first_error.expect("an unreachable node gave an error"));
        }
        Ok(BatchReport { failed, first_error: if failed > 0 { first_error } else { None } })
    }

    /// One routing pass over the keys `which`.
    fn route_once<F: OnNode>(&self, keys: &[&[u8]], which: &[usize], outcomes: &mut [Outcome], on_node: &F) -> Pass {
        let map = self.topology.map();
        let (groups, unserved) = map.route(self.cfg.namespace.prefix(), keys, which);
        let mut pass = Pass { unreachable: unserved.is_empty(), ..Pass::default() };
        for i in &unserved {
            outcomes[*i] = Outcome::ServerError;
        }
        if !unserved.is_empty() {
            self.topology.mark_stale();
            pass.first_error = Some(Error::new(ErrorKind::Server, "no cluster primary serves the slot of some keys (cluster down?)"));
        }
        let jobs: Vec<_> = groups.into_iter().map(|(node, idx)| (map.nodes[node].clone(), idx)).collect();
        let mut all_unreachable = pass.unreachable;
        for (idx, out, p) in self.on_nodes(jobs, false, on_node) {
            for (i, o) in idx.iter().zip(out) {
                outcomes[*i] = o;
            }
            all_unreachable &= p.unreachable;
            pass.merge(p);
        }
        pass.unreachable = all_unreachable;
        pass
    }

    /// Sends each key redirected by `ASK` once to the node named, after `ASKING`.
    fn follow_asks<F: OnNode>(&self, asks: Vec<(usize, String)>, outcomes: &mut [Outcome], on_node: &F) -> Pass {
        let mut by_node: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, to) in asks {
            match by_node.iter_mut().find(|(n, _)| *n == to) {
                Some((_, idx)) => idx.push(i),
                None => by_node.push((to, vec![i])),
            }
        }
        let map = self.topology.map();
        let mut jobs = Vec::new();
        for (to, idx) in by_node {
            let Some(endpoint) = parse_node_address(&to) else { continue };
            let node = map.nodes.iter().find(|n| n.endpoint == endpoint).cloned().unwrap_or_else(|| Node::new(endpoint));
            tracing::debug!(node = %node.name, keys = idx.len(), "following ASK");
            jobs.push((node, idx));
        }
        let mut pass = Pass::default();
        for (idx, out, p) in self.on_nodes(jobs, true, on_node) {
            for (i, o) in idx.iter().zip(out) {
                outcomes[*i] = o;
            }
            pass.merge(p);
        }
        pass
    }

    /// Runs `on_node` for each `(node, key indices)` job, in parallel.
    fn on_nodes<F: OnNode>(&self, jobs: Vec<(Arc<Node>, Vec<usize>)>, asking: bool, on_node: &F) -> Vec<(Vec<usize>, Vec<Outcome>, Pass)> {
        let jobs: Vec<_> = jobs
            .into_iter()
            .map(|(node, idx)| {
                move || {
                    let mut out = vec![Outcome::Miss; idx.len()];
                    let pass = on_node(&node, &idx, &mut out, asking);
                    (idx, out, pass)
                }
            })
            .collect();
        lanes::run_parallel(jobs)
    }
}

/// `host:port` (IPv6 hosts in brackets or bare) as a cluster reply names a node.
fn parse_node_address(addr: &str) -> Option<Endpoint> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(Endpoint::Tcp { host: host.to_string(), port: port.parse().ok()? })
}
