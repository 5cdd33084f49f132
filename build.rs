//! Gives the C shared library a SONAME (`libhicache_valkey.so.<major>`), so programs linked
//! against it record the versioned name and `scripts/install.sh` can install the usual
//! `libhicache_valkey.so -> .so.0 -> .so.0.1.0` chain. Only the cdylib is affected.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // ELF platforms whose linkers take -soname; macOS (install_name) and Windows have no SONAME.
    let elf = matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" | "illumos" | "solaris");
    if elf && env != "msvc" {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhicache_valkey.so.{major}");
    }
}
