//! A machine check of the C boundary: every export runs inside the panic boundary.
//!
//! Reads the source of `src/ffi/` and finds every `pub extern "C" fn` / `pub unsafe extern "C"
//! fn`. One that returns a `hicache_status` (or nothing, like `close`) must have `ffi_call(` as
//! the first statement of its body; one that returns a value (a string, a length) must start
//! with `ffi_value(` or with a `// PANIC-FREE: why` comment. The test fails naming each export
//! that does neither, and a second test checks that it catches planted violations.

use std::path::Path;

/// One exported function as the source writes it.
#[derive(Debug)]
struct Export {
    name: String,
    /// The return type, `""` for none.
    returns: String,
    /// The body from its first statement on (leading blank and comment lines skipped, except a
    /// `// PANIC-FREE:` comment, which is kept).
    body: String,
}

/// Every `pub [unsafe] extern "C" fn` in `source`.
fn exports(source: &str) -> Vec<Export> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("extern \"C\" fn ") {
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        let before = rest[line_start..at].trim();
        let after = &rest[at + "extern \"C\" fn ".len()..];
        rest = after;
        if before != "pub" && before != "pub unsafe" {
            continue;
        }
        let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // The parameter list, up to its matching parenthesis.
        let Some(open) = after.find('(') else { continue };
        let mut depth = 0;
        let mut close = None;
        for (i, c) in after[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let tail = &after[close + 1..];
        let Some(brace) = tail.find('{') else { continue };
        let returns = tail[..brace].trim().trim_start_matches("->").trim().to_string();
        let mut body = String::new();
        for line in tail[brace + 1..].lines() {
            let t = line.trim();
            if t.is_empty() || (t.starts_with("//") && !t.starts_with("// PANIC-FREE:")) {
                continue;
            }
            body = tail[brace + 1..][tail[brace + 1..].find(line).unwrap_or(0)..].trim_start().to_string();
            break;
        }
        out.push(Export { name, returns, body });
    }
    out
}

/// The exports of `source` that do not run inside the panic boundary, with why.
fn violations(source: &str) -> Vec<String> {
    exports(source)
        .into_iter()
        .filter_map(|e| {
            let status = e.returns.is_empty() || e.returns == "()" || e.returns == "hicache_status";
            if status && !e.body.starts_with("ffi_call(") {
                Some(format!("{} returns {} but its body does not start with ffi_call(", e.name, if e.returns.is_empty() { "nothing" } else { &e.returns }))
            } else if !status && !e.body.starts_with("ffi_value(") && !e.body.starts_with("// PANIC-FREE:") {
                Some(format!("{} returns {} but its body starts with neither ffi_value( nor a // PANIC-FREE: comment", e.name, e.returns))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn every_export_runs_inside_the_panic_boundary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi");
    let (mut found, mut no_mangle, mut problems) = (Vec::new(), 0, Vec::new());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.file_name().is_some_and(|n| n == "audit.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        no_mangle += source.matches("#[no_mangle]").count();
        found.extend(exports(&source).into_iter().map(|e| e.name));
        problems.extend(violations(&source).into_iter().map(|v| format!("{}: {v}", path.display())));
    }
    assert!(problems.is_empty(), "exports outside the panic boundary:\n{}", problems.join("\n"));
    // Every #[no_mangle] function was seen (a signature this reader does not know would
    // otherwise slip through unchecked), and so was each export the header declares.
    assert_eq!(found.len(), no_mangle, "exports found: {found:?}");
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/hicache_valkey.h")).unwrap();
    for name in header.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| w.starts_with("hicache_valkey_")) {
        if header.contains(&format!("{name}(")) && !name.chars().any(|c| c.is_uppercase()) {
            assert!(found.iter().any(|f| f == name), "{name} is in the header but was not checked");
        }
    }
}

#[test]
fn the_check_catches_planted_violations() {
    let planted = r#"
/// Fine.
#[no_mangle]
pub unsafe extern "C" fn good(handle: *const hicache_valkey, out: *mut u64) -> hicache_status {
    // SAFETY: a comment before the first statement is skipped.
    ffi_call(|| Ok(()))
}

#[no_mangle]
pub unsafe extern "C" fn checks_first(handle: *const hicache_valkey) -> hicache_status {
    let store = unsafe { store(handle) };
    ffi_call(|| Ok(()))
}

#[no_mangle]
pub extern "C" fn frees(handle: *mut hicache_valkey) {
    drop(handle);
}

#[no_mangle]
pub extern "C" fn name_of(v: i32) -> *const c_char {
    names(v)
}

#[no_mangle]
pub extern "C" fn fixed() -> *const c_char {
    // PANIC-FREE: a static string.
    c"x".as_ptr()
}

#[no_mangle]
pub extern "C" fn guarded(f: extern "C" fn(i32) -> i32) -> usize {
    ffi_value(0, || 1)
}

extern "C" fn private_helper() -> hicache_status {
    hicache_status::Ok
}
"#;
    let v = violations(planted);
    let names: Vec<&str> = v.iter().map(|s| s.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["checks_first", "frees", "name_of"], "{v:#?}");
    assert_eq!(exports(planted).len(), 6);
}
