//! Against a real 3-primary Valkey Cluster: keys are routed by slot to their primary, a
//! resharding (MOVED) is followed, a lost primary fails only its own keys, stats and clear
//! cover every primary.

mod common;

use common::{page, refs, set_segments, settings, Cluster};
use hicache_valkey::{Outcome, Store};
use std::process::Command;

/// A handle on the cluster through node port `port`; `{cluster}` in the model name must not act
/// as a hash tag.
fn open(port: u16) -> Store {
    common::open(settings(port, "{cluster}/model"))
}

/// `n` SGLang-like (64 hex digit) keys and their 20 000-byte pages.
fn data(n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let keys = (0..n).map(|i| format!("{i:064x}").into_bytes()).collect();
    (keys, (0..n).map(|i| page(i, 20_000)).collect())
}

/// Each page written as two segments.
fn set(store: &Store, keys: &[Vec<u8>], pages: &[Vec<u8>]) -> Vec<Outcome> {
    set_segments(store, keys, &pages.iter().map(|p| vec![&p[..5000], &p[5000..]]).collect::<Vec<_>>())
}

fn get(store: &Store, keys: &[Vec<u8>]) -> (Vec<Outcome>, Vec<Vec<u8>>) {
    let mut bufs = vec![vec![0u8; 20_000]; keys.len()];
    (common::get(store, keys, &mut bufs), bufs)
}

#[test]
fn keys_spread_over_primaries_and_round_trip() {
    let cluster = Cluster::start(3);
    let store = open(cluster.nodes[1].port);
    assert_eq!(store.cluster_primaries(), 3);
    let (keys, pages) = data(300);
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    // `{cluster}` in the model name is escaped, so it is no hash tag: every primary holds keys.
    for i in 0..3 {
        assert!(cluster.dbsize(i) > 50, "node {i} holds {} keys", cluster.dbsize(i));
    }
    let (out, bufs) = get(&store, &keys);
    assert!(out.iter().all(|o| *o == Outcome::Ok), "{out:?}");
    assert!(bufs == pages);
    let mut found = vec![false; 300];
    assert_eq!(store.batch_exists(&refs(&keys), &mut found).unwrap().0, 300);
    let s = store.stats().unwrap();
    assert_eq!((s.server.model_keys, s.server.cluster_primaries), (300, 3));
    assert!(s.server.connected_clients >= 3);
    assert_eq!(store.clear().unwrap(), 300);
    assert_eq!((0..3).map(|i| cluster.dbsize(i)).sum::<u64>(), 0);
}

/// `skip_existing` on a cluster: the keys of one node span hash slots, so no multi-key EXISTS
/// is sent (it would fail with CROSSSLOT); every header is read with GETRANGE, and stored pages
/// are skipped on every primary.
#[test]
fn skip_existing_works_across_primaries() {
    let cluster = Cluster::start(3);
    let mut s = settings(cluster.nodes[0].port, "{cluster}/model");
    s.skip_existing = Some(true);
    let store = common::open(s);
    let (keys, pages) = data(200);
    assert!(set(&store, &keys[..100], &pages[..100]).iter().all(|o| *o == Outcome::Ok));
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let c = store.client_stats();
    assert_eq!((c.pages_written, c.errors), (200, 0), "100 written, then 100 skipped and 100 written");
    let (out, bufs) = get(&store, &keys);
    assert!(out.iter().all(|o| *o == Outcome::Ok), "{out:?}");
    assert!(bufs == pages);
}

#[test]
fn a_resharded_slot_is_followed_after_moved() {
    let cluster = Cluster::start(3);
    let store = open(cluster.nodes[0].port);
    let (keys, pages) = data(200);
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let before = cluster.dbsize(0);
    // Move all of node 0's slots (and their keys) to node 1, behind the handle's back.
    let out = Command::new("valkey-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", cluster.nodes[0].port)])
        .args(["--cluster-from", &cluster.id(0), "--cluster-to", &cluster.id(1), "--cluster-slots", "16384", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "reshard failed: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(cluster.dbsize(0), 0, "node 0 had {before} keys and should have none now");
    let (out, bufs) = get(&store, &keys);
    assert!(out.iter().all(|o| *o == Outcome::Ok), "{out:?}");
    assert!(bufs == pages);
    assert_eq!(store.cluster_primaries(), 2);
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
}

#[test]
fn a_lost_primary_fails_only_its_own_keys() {
    let mut cluster = Cluster::start(3);
    let store = open(cluster.nodes[0].port);
    let (keys, pages) = data(150);
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let on_node2 = cluster.dbsize(2) as usize;
    cluster.nodes[2].kill();
    let (out, bufs) = get(&store, &keys);
    let failed = out.iter().filter(|o| **o == Outcome::IoError).count();
    assert_eq!(failed, on_node2, "{out:?}");
    for (i, o) in out.iter().enumerate() {
        if *o == Outcome::Ok {
            assert_eq!(bufs[i], pages[i]);
        }
    }
    assert_eq!(out.iter().filter(|o| **o == Outcome::Ok).count(), 150 - on_node2);
}

#[test]
fn after_a_failover_the_promoted_replica_serves_the_keys() {
    let mut cluster = Cluster::start_with_replicas(3, 1);
    let store = open(cluster.nodes[0].port);
    let (keys, pages) = data(120);
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    // valkey-cli chooses which nodes become primaries: ask each node its role.
    let role = |i: usize| -> String {
        let r: Vec<redis::Value> = redis::cmd("ROLE").query(&mut cluster.nodes[i].redis()).unwrap();
        redis::from_redis_value(r[0].clone()).unwrap()
    };
    let primaries: Vec<usize> = (0..6).filter(|i| role(*i) == "master").collect();
    assert_eq!(primaries.len(), 3);
    // Make sure the replicas have everything before a primary dies.
    for &i in &primaries {
        let acked: u64 = redis::cmd("WAIT").arg(1).arg(10000).query(&mut cluster.nodes[i].redis()).unwrap();
        assert_eq!(acked, 1);
    }
    let dead = *primaries.iter().find(|i| **i != 0).unwrap();
    let dead_id = cluster.id(dead);
    cluster.nodes[dead].kill();
    // Wait (bounded) until every surviving node marks the dead one failed and sees 3 primaries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for i in (0..6).filter(|i| *i != dead) {
        loop {
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut cluster.nodes[i].redis()).unwrap();
            let failed = nodes.lines().any(|l| l.starts_with(&dead_id) && l.contains("fail") && !l.contains("fail?"));
            let masters = nodes.lines().filter(|l| l.contains("master") && !l.contains("fail")).count();
            if failed && masters == 3 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no failover seen by node {i}:\n{nodes}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    // The handle still points the dead node's slots at it: the first try fails, the slot
    // map is read again and the keys are fetched from the promoted replica.
    let (out, bufs) = get(&store, &keys);
    assert!(out.iter().all(|o| *o == Outcome::Ok), "{out:?}");
    assert!(bufs == pages);
    assert_eq!(store.cluster_primaries(), 3);
}

/// During a slot migration the source node answers `-ASK` for keys that already moved and for
/// new keys: both are followed (ASKING + the command at the named node), so stored pages read
/// and new pages are written while the slot is half moved.
#[test]
fn a_slot_mid_migration_is_followed_after_ask() {
    let cluster = Cluster::start(3);
    let store = open(cluster.nodes[0].port);
    let prefix = "hicache:%7Bcluster%7D/model:t0of1:";
    // A hash tag in the page keys puts both in one slot.
    let (moved_key, new_key) = (b"{ask-tag}moved".to_vec(), b"{ask-tag}new".to_vec());
    let page: Vec<u8> = (0..20_000).map(|j| (j * 13) as u8).collect();
    assert_eq!(set(&store, std::slice::from_ref(&moved_key), std::slice::from_ref(&page)), [Outcome::Ok]);
    let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(format!("{prefix}{{ask-tag}}moved")).query(&mut cluster.nodes[0].redis()).unwrap();
    let owner = (0..3).find(|i| cluster.dbsize(*i) == 1).expect("one node holds the key");
    let target = (owner + 1) % 3;
    let (src, dst) = (&cluster.nodes[owner], &cluster.nodes[target]);
    let _: () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("IMPORTING").arg(cluster.id(owner)).query(&mut dst.redis()).unwrap();
    let _: () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg("MIGRATING").arg(cluster.id(target)).query(&mut src.redis()).unwrap();
    let _: () = redis::cmd("MIGRATE").arg("127.0.0.1").arg(dst.port).arg(format!("{prefix}{{ask-tag}}moved")).arg(0).arg(5000).query(&mut src.redis()).unwrap();
    assert_eq!((cluster.dbsize(owner), cluster.dbsize(target)), (0, 1), "the key moved");
    let (out, bufs) = get(&store, std::slice::from_ref(&moved_key));
    assert_eq!(out, [Outcome::Ok], "a migrated key is read after ASK");
    assert_eq!(bufs[0], page);
    assert_eq!(set(&store, std::slice::from_ref(&new_key), std::slice::from_ref(&page)), [Outcome::Ok], "a new key in the slot is written after ASK");
    assert_eq!(cluster.dbsize(target), 2);
    let k = [moved_key.as_slice(), new_key.as_slice()];
    let mut found = [false; 2];
    assert_eq!(store.batch_exists(&k, &mut found).unwrap().0, 2);
}

/// A node of a cluster whose slots were never assigned: a clear error at open, not a panic later.
#[test]
fn a_cluster_without_slots_is_a_clear_error() {
    let node = common::Server::start_cluster_node(&[]);
    let s = hicache_valkey::Settings { host: Some("127.0.0.1".into()), port: Some(node.port.into()), ..Default::default() };
    let e = Store::open(s.resolve().unwrap()).err().expect("open fails");
    assert!(e.message().contains("no node of its cluster serves any hash slot"), "{e}");
}

/// With one primary down, stats still report the others and say one is missing.
#[test]
fn stats_with_a_primary_down_report_the_others() {
    let mut cluster = Cluster::start(3);
    let store = open(cluster.nodes[0].port);
    let (keys, pages) = data(60);
    assert!(set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let on_node2 = cluster.dbsize(2);
    cluster.nodes[2].kill();
    let s = store.stats().expect("partial stats");
    assert_eq!((s.server.cluster_primaries, s.server.unreachable_primaries), (3, 1));
    assert_eq!(s.server.model_keys, 60 - on_node2);
}
