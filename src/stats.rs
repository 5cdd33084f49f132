//! Statistics: what the server says (INFO, a SCAN count of the model's keys) and what this
//! handle counted itself.

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::resp::{push_command, Value};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Server-side figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerStats {
    /// Keys of this model in the selected database (all ranks), counted with SCAN.
    pub model_keys: u64,
    /// Keys in the selected database.
    pub db_keys: u64,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `used_memory_human`, e.g. `1.02G`.
    pub used_memory_human: String,
    /// `maxmemory` in bytes (0: no limit).
    pub maxmemory: u64,
    /// `maxmemory_policy`, e.g. `allkeys-lru`.
    pub maxmemory_policy: String,
    /// Keys evicted since the server started.
    pub evicted_keys: u64,
    /// Successful key lookups since the server started (all clients).
    pub keyspace_hits: u64,
    /// Failed key lookups since the server started (all clients).
    pub keyspace_misses: u64,
    /// Clients connected now.
    pub connected_clients: u64,
    /// The server's version (`valkey_version`, or `redis_version` on Redis).
    pub server_version: String,
    /// Primaries of the cluster these figures are summed over; 0 for a single server.
    pub cluster_primaries: u64,
    /// Primaries that could not be reached, so their figures are missing from the sums.
    pub unreachable_primaries: u64,
}

impl ServerStats {
    /// The figures of several servers (a cluster's primaries) added up; the policy and version
    /// are the first server's, the memory's human form is recomputed for the sum.
    pub fn sum(all: Vec<ServerStats>) -> ServerStats {
        let mut all = all.into_iter();
        let Some(mut total) = all.next() else { return ServerStats::default() };
        let mut several = false;
        for s in all {
            several = true;
            total.model_keys += s.model_keys;
            total.db_keys += s.db_keys;
            total.used_memory += s.used_memory;
            total.maxmemory += s.maxmemory;
            total.evicted_keys += s.evicted_keys;
            total.keyspace_hits += s.keyspace_hits;
            total.keyspace_misses += s.keyspace_misses;
            total.connected_clients += s.connected_clients;
        }
        if several {
            total.used_memory_human = human(total.used_memory);
        }
        total
    }

    /// hits / (hits + misses), 0 when there were none.
    pub fn keyspace_hit_ratio(&self) -> f64 {
        ratio(self.keyspace_hits, self.keyspace_misses)
    }

    /// Fills the INFO fields from the text of `INFO` (lines `name:value`).
    pub fn parse_info(&mut self, info: &str) {
        for line in info.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else { continue };
            let num = || value.parse().unwrap_or(0);
            match name {
                "used_memory" => self.used_memory = num(),
                "used_memory_human" => self.used_memory_human = value.to_string(),
                "maxmemory" => self.maxmemory = num(),
                "maxmemory_policy" => self.maxmemory_policy = value.to_string(),
                "evicted_keys" => self.evicted_keys = num(),
                "keyspace_hits" => self.keyspace_hits = num(),
                "keyspace_misses" => self.keyspace_misses = num(),
                "connected_clients" => self.connected_clients = num(),
                "valkey_version" => self.server_version = value.to_string(),
                "redis_version" if self.server_version.is_empty() => self.server_version = value.to_string(),
                _ => {}
            }
        }
    }
}

/// Client-side latency of one operation, per call (a whole batch), as the client saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Calls measured.
    pub calls: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

/// This handle's own counters since it was opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStats {
    pub get_hits: u64,
    pub get_misses: u64,
    pub exists_hits: u64,
    pub exists_misses: u64,
    pub pages_written: u64,
    pub bytes_written: u64,
    pub pages_read: u64,
    pub bytes_read: u64,
    /// Keys that failed (timeouts, I/O, server errors) plus calls that failed as a whole.
    pub errors: u64,
    /// Connections re-established after a failure.
    pub reconnects: u64,
    pub set_latency: Latency,
    pub get_latency: Latency,
    pub exists_latency: Latency,
}

impl ClientStats {
    /// Pages found by batch_get / pages asked for.
    pub fn get_hit_ratio(&self) -> f64 {
        ratio(self.get_hits, self.get_misses)
    }

    /// Keys found by batch_exists / keys asked for.
    pub fn exists_hit_ratio(&self) -> f64 {
        ratio(self.exists_hits, self.exists_misses)
    }
}

/// Both halves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub server: ServerStats,
    pub client: ClientStats,
}

/// Bytes the way Valkey's `used_memory_human` writes them (`1.50M`).
fn human(bytes: u64) -> String {
    let units = ["B", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", units[u])
}

fn ratio(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

/// Which operation a latency belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Set,
    Get,
    Exists,
}

/// Lock-free counters plus one latency histogram per operation.
pub struct Counters {
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub exists_hits: AtomicU64,
    pub exists_misses: AtomicU64,
    pub pages_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub pages_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub errors: AtomicU64,
    pub reconnects: AtomicU64,
    latency: [Mutex<Histogram<u64>>; 3],
}

impl Default for Counters {
    fn default() -> Self {
        let hist = || Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"));
        Counters {
            get_hits: AtomicU64::new(0),
            get_misses: AtomicU64::new(0),
            exists_hits: AtomicU64::new(0),
            exists_misses: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            pages_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            latency: [hist(), hist(), hist()],
        }
    }
}

impl Counters {
    /// Records one call's duration.
    pub fn record(&self, op: Op, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, 3_600_000_000);
        self.latency[op as usize].lock().saturating_record(us);
    }

    fn latency(&self, op: Op) -> Latency {
        let h = self.latency[op as usize].lock();
        Latency { calls: h.len(), p50_us: h.value_at_quantile(0.5), p99_us: h.value_at_quantile(0.99) }
    }

    /// A snapshot.
    pub fn snapshot(&self) -> ClientStats {
        ClientStats {
            get_hits: self.get_hits.load(Relaxed),
            get_misses: self.get_misses.load(Relaxed),
            exists_hits: self.exists_hits.load(Relaxed),
            exists_misses: self.exists_misses.load(Relaxed),
            pages_written: self.pages_written.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            pages_read: self.pages_read.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            errors: self.errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            set_latency: self.latency(Op::Set),
            get_latency: self.latency(Op::Get),
            exists_latency: self.latency(Op::Exists),
        }
    }
}

/// Keys per SCAN page.
const SCAN_COUNT: &[u8] = b"1000";

/// One page of `SCAN cursor MATCH pattern`: the next cursor (0 at the end) and the keys.
fn scan_page(conn: &mut Conn, cursor: &[u8], pattern: &[u8], timeout: Duration) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let reply = conn.command(&[b"SCAN", cursor, b"MATCH", pattern, b"COUNT", SCAN_COUNT], Instant::now() + timeout)?;
    let bad = |r: &Value| Error::protocol(format!("{} answered SCAN with {r:?}", conn.server()));
    match reply {
        Value::Array(mut parts) if parts.len() == 2 => {
            let keys = match parts.pop() {
                Some(Value::Array(keys)) => keys
                    .into_iter()
                    .map(|k| match k {
                        Value::Bulk(b) => Ok(b),
                        other => Err(bad(&other)),
                    })
                    .collect::<Result<Vec<_>>>()?,
                other => return Err(bad(&Value::Array(other.into_iter().collect()))),
            };
            match parts.pop() {
                Some(Value::Bulk(cursor)) => Ok((cursor, keys)),
                other => Err(bad(&Value::Array(other.into_iter().collect()))),
            }
        }
        Value::Error(e) => Err(Error::from_server_reply(&e, conn.server())),
        other => Err(bad(&other)),
    }
}

/// Visits every key matching `pattern`, a SCAN page at a time (each round trip has `timeout`).
fn scan(conn: &mut Conn, pattern: &[u8], timeout: Duration, mut page: impl FnMut(&mut Conn, Vec<Vec<u8>>) -> Result<()>) -> Result<()> {
    let mut cursor = b"0".to_vec();
    loop {
        let (next, keys) = scan_page(conn, &cursor, pattern, timeout)?;
        if !keys.is_empty() {
            page(conn, keys)?;
        }
        if next == b"0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// Counts the keys matching `pattern` with SCAN.
pub fn count_keys(conn: &mut Conn, pattern: &[u8], timeout: Duration) -> Result<u64> {
    let mut n = 0;
    scan(conn, pattern, timeout, |_, keys| {
        n += keys.len() as u64;
        Ok(())
    })?;
    Ok(n)
}

/// Deletes the keys matching `pattern` with SCAN + UNLINK (one pipelined UNLINK per key, as a
/// cluster node takes only keys of one slot per command); returns how many were deleted.
pub fn unlink_keys(conn: &mut Conn, pattern: &[u8], timeout: Duration) -> Result<u64> {
    let mut n = 0;
    scan(conn, pattern, timeout, |conn, keys| {
        let mut cmds = Vec::with_capacity(keys.len() * 64);
        for k in &keys {
            push_command(&mut cmds, &[b"UNLINK", k]);
        }
        let mut first_error = None;
        for reply in conn.pipeline(&cmds, keys.len(), Instant::now() + timeout)? {
            match reply {
                Value::Int(d) => n += d.max(0) as u64,
                Value::Error(e) => first_error = first_error.or(Some(Error::from_server_reply(&e, conn.server()))),
                other => first_error = first_error.or(Some(Error::protocol(format!("{} answered UNLINK with {other:?}", conn.server())))),
            }
        }
        first_error.map_or(Ok(()), Err)
    })?;
    Ok(n)
}

/// The server's figures: INFO, DBSIZE and a SCAN count of `pattern`.
pub fn server_stats(conn: &mut Conn, pattern: &[u8], timeout: Duration) -> Result<ServerStats> {
    let mut s = ServerStats::default();
    let text = |conn: &mut Conn, args: &[&[u8]]| -> Result<Value> {
        match conn.command(args, Instant::now() + timeout)? {
            Value::Error(e) => Err(Error::from_server_reply(&e, conn.server())),
            v => Ok(v),
        }
    };
    let info = text(conn, &[b"INFO", b"server", b"memory", b"stats", b"clients"])?;
    s.parse_info(&info.text().ok_or_else(|| Error::protocol(format!("{} answered INFO with {info:?}", conn.server())))?);
    let dbsize = text(conn, &[b"DBSIZE"])?;
    s.db_keys = dbsize.int().ok_or_else(|| Error::protocol(format!("{} answered DBSIZE with {dbsize:?}", conn.server())))? as u64;
    s.model_keys = count_keys(conn, pattern, timeout)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_lines() {
        let mut s = ServerStats::default();
        s.parse_info("# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory_policy:allkeys-lru\r\n# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\nconnected_clients:7\r\nredis_version:7.2.4\r\nvalkey_version:8.0.1\r\n");
        assert_eq!((s.used_memory, s.used_memory_human.as_str()), (1048576, "1.00M"));
        assert_eq!(s.maxmemory_policy, "allkeys-lru");
        assert_eq!((s.keyspace_hits, s.keyspace_misses, s.connected_clients), (3, 1, 7));
        assert_eq!(s.keyspace_hit_ratio(), 0.75);
        assert_eq!(s.server_version, "8.0.1");
    }

    #[test]
    fn sums_over_primaries() {
        let one = ServerStats { model_keys: 2, used_memory: 1 << 20, used_memory_human: "1.00M".into(), connected_clients: 3, ..Default::default() };
        let s = ServerStats::sum(vec![one.clone(), one.clone(), one.clone()]);
        assert_eq!((s.model_keys, s.used_memory, s.connected_clients), (6, 3 << 20, 9));
        assert_eq!(s.used_memory_human, "3.00M");
        assert_eq!(ServerStats::sum(vec![one.clone()]), one);
    }

    #[test]
    fn latency_quantiles() {
        let c = Counters::default();
        for ms in 1..=100 {
            c.record(Op::Get, Duration::from_millis(ms));
        }
        let l = c.snapshot().get_latency;
        assert_eq!(l.calls, 100);
        assert!((49_000..=51_000).contains(&l.p50_us), "{l:?}");
        assert!((98_000..=100_000).contains(&l.p99_us), "{l:?}");
        assert_eq!(c.snapshot().set_latency.calls, 0);
    }
}
