//! One server: its pool of data connections and its control connection.

use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind, Result};
use crate::socket::Endpoint;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

/// One server of the deployment (the only one, or a cluster primary).
pub struct Node {
    pub endpoint: Endpoint,
    /// `host:port` or `unix:PATH`, for messages.
    pub name: String,
    pool: Mutex<Vec<Conn>>,
    /// The connection for INFO / SCAN / UNLINK / CLUSTER SLOTS, one request at a time.
    control: Mutex<Option<Conn>>,
}

impl Node {
    pub fn new(endpoint: Endpoint) -> Arc<Node> {
        Arc::new(Node { name: endpoint.name(), endpoint, pool: Mutex::new(Vec::new()), control: Mutex::new(None) })
    }

    /// A new connection, made by `deadline` (and within the connect timeout).
    pub fn connect(&self, cfg: &Config, deadline: Instant) -> Result<Conn> {
        Conn::connect(cfg, &self.endpoint, deadline.min(Instant::now() + cfg.connect_timeout))
    }

    /// An idle pooled connection, if there is one, and whether dead ones were found. Connections
    /// the server closed while they sat in the pool (restart, idle `timeout`, `CLIENT KILL`) are
    /// dropped here, before anything is written to them.
    pub fn take_pooled(&self) -> (Option<Conn>, bool) {
        let mut pool = self.pool.lock();
        let mut dead = false;
        while let Some(mut conn) = pool.pop() {
            if conn.is_idle() {
                return (Some(conn), dead);
            }
            dead = true;
        }
        (None, dead)
    }

    /// Returns a connection to the pool, unless it has unread bytes (a stray or late reply would
    /// be read by the next call as its own) or the pool is full.
    pub fn put(&self, mut conn: Conn, max: usize) {
        if !conn.is_idle() {
            tracing::debug!(server = %self.name, "dropping a connection with unread bytes");
            return;
        }
        let mut pool = self.pool.lock();
        if pool.len() < max {
            pool.push(conn);
        }
    }

    /// Drops every pooled connection (after one failed, the others are likely dead too).
    pub fn clear_pool(&self) {
        self.pool.lock().clear();
    }

    /// Runs `f` on the control connection, opening it if needed. Each request `f` makes carries its
    /// own deadline (see `Conn::command`); the first error drops the connection, and after a
    /// dropped connection `f` runs once more on a new one (all control commands are safe to
    /// repeat). Waiting for another thread's control operation counts against `cfg.io_timeout`.
    pub fn control<T>(&self, cfg: &Config, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        let named = |e: Error| Error::new(e.kind(), format!("{} ({})", e.message(), self.name));
        let mut slot = self.control.try_lock_for(cfg.io_timeout).ok_or_else(|| {
            Error::new(ErrorKind::Timeout, format!("another control operation on {} did not finish in time", self.name))
        })?;
        let mut retried = false;
        loop {
            if slot.is_none() {
                *slot = Some(self.connect(cfg, Instant::now() + cfg.connect_timeout).map_err(named)?);
            }
            match f(slot.as_mut().expect("control connection is open")) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    *slot = None;
                    if e.kind() == ErrorKind::Connection && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(named(e));
                }
            }
        }
    }
}
