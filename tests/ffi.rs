//! The exported C functions called from Rust against a real server, for what the C tests do not
//! reach easily: struct versioning of the stats.

mod common;

use common::Server;
use ::hicache_valkey::ffi::{hicache_stats, hicache_status, hicache_valkey_close, hicache_valkey_stats};

#[test]
fn stats_serve_callers_built_against_the_shorter_first_struct() {
    let server = Server::start(&[]);
    let h = common::c_open(server.port, None, |_| {});
    unsafe {

        let old = std::mem::offset_of!(hicache_stats, cluster_primaries);
        let mut buf = vec![0xEEu8; std::mem::size_of::<hicache_stats>() + 16];
        buf[..4].copy_from_slice(&(old as u32).to_ne_bytes());
        assert_eq!(hicache_valkey_stats(h, buf.as_mut_ptr().cast()), hicache_status::Ok);
        assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize, old, "struct_size kept");
        assert!(buf[old..].iter().all(|b| *b == 0xEE), "wrote past the caller's struct");
        let policy = &buf[std::mem::offset_of!(hicache_stats, maxmemory_policy)..][..10];
        assert_eq!(policy, b"noeviction");

        buf[..4].copy_from_slice(&(old as u32 - 8).to_ne_bytes());
        assert_eq!(hicache_valkey_stats(h, buf.as_mut_ptr().cast()), hicache_status::InvalidArgument);
        hicache_valkey_close(h);
    }
}
