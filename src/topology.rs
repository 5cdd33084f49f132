//! Where keys go: one server, or a Valkey Cluster's primaries by hash slot, and keeping the slot
//! map current.

use crate::cluster::{self, SlotRange};
use crate::config::Config;
use crate::error::Result;
use crate::node::Node;
use crate::resp::Value;
use crate::socket::Endpoint;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// The nodes and, in cluster mode, which serves each slot.
pub struct Map {
    pub nodes: Vec<Arc<Node>>,
    /// Cluster mode: the index in `nodes` of each slot's primary (`None`: no primary).
    pub slots: Option<Vec<Option<u16>>>,
}

impl Map {
    /// Groups key indices by node: `(node index, key indices)`; keys of unserved slots come
    /// back in the second list.
    pub fn route(&self, prefix: &[u8], keys: &[&[u8]], which: &[usize]) -> (Vec<(usize, Vec<usize>)>, Vec<usize>) {
        let Some(slots) = &self.slots else {
            let groups = if which.is_empty() { Vec::new() } else { vec![(0, which.to_vec())] };
            return (groups, Vec::new());
        };
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        let mut unserved = Vec::new();
        let mut full = Vec::with_capacity(prefix.len() + 128);
        for &i in which {
            full.clear();
            full.extend_from_slice(prefix);
            full.extend_from_slice(keys[i]);
            match slots[cluster::slot(&full) as usize] {
                Some(n) => groups[n as usize].push(i),
                None => unserved.push(i),
            }
        }
        let groups = groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).collect();
        (groups, unserved)
    }

    /// Cluster primaries (0 for a single server).
    pub fn primaries(&self) -> usize {
        self.slots.as_ref().map_or(0, |_| self.nodes.len())
    }
}

/// The current map, shared by every thread of a handle.
pub struct Topology {
    map: RwLock<Arc<Map>>,
    seed: Endpoint,
    /// A redirection or a lost connection suggests the slot map changed: the next call refreshes.
    stale: AtomicBool,
    /// Nodes that refused connections since the slot map was last read.
    down: Mutex<Vec<String>>,
    /// One refresh at a time; `generation` counts them, so a thread that waited for another's
    /// refresh does not repeat it.
    refreshing: Mutex<()>,
    generation: AtomicU64,
}

impl Topology {
    /// A topology of the one seed node.
    pub fn new(seed: Arc<Node>) -> Topology {
        Topology {
            seed: seed.endpoint.clone(),
            map: RwLock::new(Arc::new(Map { nodes: vec![seed], slots: None })),
            stale: AtomicBool::new(false),
            down: Mutex::new(Vec::new()),
            refreshing: Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    pub fn map(&self) -> Arc<Map> {
        self.map.read().clone()
    }

    pub fn is_cluster(&self) -> bool {
        self.map.read().slots.is_some()
    }

    /// Notes that the slot map may be stale (a redirection, a lost node).
    pub fn mark_stale(&self) {
        self.stale.store(true, Relaxed);
    }

    /// Notes that `node` refused connections.
    pub fn mark_down(&self, node: &Node) {
        self.stale.store(true, Relaxed);
        let mut down = self.down.lock();
        if !down.contains(&node.name) {
            down.push(node.name.clone());
        }
    }

    /// Refreshes the slot map when an earlier call left it marked stale.
    pub fn refresh_if_stale(&self, cfg: &Config) {
        if self.stale.swap(false, Relaxed) {
            self.refresh(cfg);
        }
    }

    /// Makes `ranges` the slot map, keeping the pools of nodes that stay.
    pub fn install(&self, ranges: Vec<SlotRange>) {
        let old = self.map();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut slots = vec![None; cluster::SLOTS];
        for r in ranges {
            let endpoint = Endpoint::Tcp { host: r.host, port: r.port };
            let index = match nodes.iter().position(|n| n.endpoint == endpoint) {
                Some(i) => i,
                None => {
                    let node = old.nodes.iter().find(|n| n.endpoint == endpoint).cloned();
                    nodes.push(node.unwrap_or_else(|| Node::new(endpoint)));
                    nodes.len() - 1
                }
            };
            slots[r.start as usize..=r.end as usize].fill(Some(index as u16));
        }
        tracing::info!(primaries = nodes.len(), "cluster slot map loaded");
        *self.map.write() = Arc::new(Map { nodes, slots: Some(slots) });
    }

    /// Reads the slot map again (cluster mode only). Nodes learn of a failover by gossip, so a
    /// node may still name a primary that just refused our connections: such a view is used only
    /// when no node offers one without it. Concurrent callers share one refresh.
    pub fn refresh(&self, cfg: &Config) {
        if !self.is_cluster() {
            return;
        }
        let seen = self.generation.load(Relaxed);
        let _one = self.refreshing.lock();
        if self.generation.load(Relaxed) != seen {
            return; // another thread refreshed while this one waited
        }
        let map = self.map();
        let down = std::mem::take(&mut *self.down.lock());
        let seed = Node::new(self.seed.clone());
        let mut fallback = None;
        for node in map.nodes.iter().chain(std::iter::once(&seed)).filter(|n| !down.contains(&n.name)) {
            match cluster_slots(node, cfg) {
                Ok(Some(ranges)) => {
                    if !ranges.iter().any(|r| down.contains(&Endpoint::Tcp { host: r.host.clone(), port: r.port }.name())) {
                        self.install(ranges);
                        self.generation.fetch_add(1, Relaxed);
                        return;
                    }
                    fallback.get_or_insert(ranges);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(node = %node.name, error = %e, "cannot read the slot map here"),
            }
        }
        match fallback {
            Some(ranges) => self.install(ranges),
            None => tracing::warn!("no cluster node answered CLUSTER SLOTS; keeping the old slot map"),
        }
        self.generation.fetch_add(1, Relaxed);
    }
}

/// `CLUSTER SLOTS` at `node`; `None` when the server is not in cluster mode.
pub fn cluster_slots(node: &Node, cfg: &Config) -> Result<Option<Vec<SlotRange>>> {
    let host = match &node.endpoint {
        Endpoint::Tcp { host, .. } => host.clone(),
        Endpoint::Unix(_) => "127.0.0.1".to_string(),
    };
    node.control(cfg, |conn| match conn.command(&[b"CLUSTER", b"SLOTS"], Instant::now() + cfg.io_timeout)? {
        // "ERR This instance has cluster support disabled" (or an ACL without cluster|slots,
        // which a standalone deployment need not grant).
        Value::Error(e) => {
            tracing::debug!(server = %conn.server(), reply = %e, "CLUSTER SLOTS refused: not a cluster");
            Ok(None)
        }
        v => cluster::parse_slots(&v, &host).map(Some),
    })
}
