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

/// The header must compile cleanly as C11 and as C++17 (a name used for both a type and a
/// function once slipped through the staleness check above).
#[test]
fn header_compiles_as_c_and_cpp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("use_header.c");
    std::fs::write(&src, "#include \"hicache_valkey.h\"\n#include \"hicache_valkey.h\"\nint main(void) { return 0; }\n").unwrap();
    for (compiler, std) in [("cc", "-std=c11"), ("c++", "-std=c++17")] {
        let mut cmd = std::process::Command::new(compiler);
        if compiler == "c++" {
            cmd.args(["-x", "c++"]);
        }
        let out = cmd
            .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-I"])
            .arg(root.join("include"))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
        assert!(out.status.success(), "{compiler} rejects the header:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}
