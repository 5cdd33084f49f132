//! The committed C header must be what cbindgen generates from the current source.
//! `HICACHE_VALKEY_BLESS=1 cargo test --test header` (or scripts/gen-header.sh) rewrites it.

use std::path::Path;

#[test]
fn header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = root.join("include/hicache_valkey.h");
    if std::env::var_os("HICACHE_VALKEY_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write header");
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/hicache_valkey.h is stale: run scripts/gen-header.sh and commit the result"
    );
}
