//! Key namespacing.
//!
//! A caller's page key `K` (binary-safe) is stored under
//!
//! ```text
//! hicache:{model}:{ranks}:K
//!   {ranks} = t{tp_rank}of{tp_size}[.p{pp_rank}of{pp_size}][.c{cp_rank}of{cp_size}]   (MHA)
//!           | mla[.p{pp_rank}of{pp_size}][.c{cp_rank}of{cp_size}]                      (MLA)
//! ```
//!
//! The `.p` part appears only when pp_size > 1, the `.c` part only when cp_size > 1. MLA models hold
//! the same KV on every tp rank, so their rank field leaves the tp part out and all ranks share one
//! copy. Neither `{model}` nor `{ranks}` ever contains `:`, so the prefix ends at the third `:` of
//! the full key and no two namespaces can produce the same full key, whatever bytes the page keys
//! `K` hold (an MLA key `t0of1:X` is not MHA rank 0's page `X`).
//! In `{model}`, `%`, `:`, `{` and `}` are written as `%25`, `%3A`, `%7B` and `%7D`: a model's
//! segment never contains `:`, so `hicache:{model}:*` matches exactly that model's keys, and never
//! forms a cluster hash tag, so a model's pages spread over all slots of a cluster.

use crate::error::{Error, Result};

/// Who is storing: the model and this worker's place in the parallel layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    model: String,
    is_mla: bool,
    prefix: Vec<u8>,
}

impl Namespace {
    /// Validates ranks (`0 <= rank < size`) and builds the key prefix. Pairs are `(rank, size)`.
    pub fn new(model: String, is_mla: bool, tp: (i64, i64), pp: (i64, i64), cp: (i64, i64)) -> Result<Self> {
        if model.is_empty() {
            return Err(Error::invalid_config("model name is empty"));
        }
        for ((rank, size), what) in [(tp, "tp"), (pp, "pp"), (cp, "cp")] {
            if size < 1 || rank < 0 || rank >= size {
                return Err(Error::invalid_config(format!(
                    "{what}_rank {rank} / {what}_size {size} is invalid (need 0 <= rank < size)"
                )));
            }
        }
        let mut prefix = format!("hicache:{}:", escape_model(&model));
        if is_mla {
            prefix += "mla";
        } else {
            prefix += &format!("t{}of{}", tp.0, tp.1);
        }
        if pp.1 > 1 {
            prefix += &format!(".p{}of{}", pp.0, pp.1);
        }
        if cp.1 > 1 {
            prefix += &format!(".c{}of{}", cp.0, cp.1);
        }
        prefix.push(':');
        Ok(Namespace { model, is_mla, prefix: prefix.into_bytes() })
    }

    /// The model name as given.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether keys leave out the tp rank (MLA).
    pub fn is_mla(&self) -> bool {
        self.is_mla
    }

    /// The prefix put before every key of this worker.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The full key of `key`.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    /// A `SCAN MATCH` pattern for every key of this model (all ranks), glob-escaped.
    pub fn model_pattern(&self) -> Vec<u8> {
        let mut p = b"hicache:".to_vec();
        for b in escape_model(&self.model).bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                p.push(b'\\');
            }
            p.push(b);
        }
        p.extend_from_slice(b":*");
        p
    }
}

fn escape_model(model: &str) -> String {
    model.replace('%', "%25").replace(':', "%3A").replace('{', "%7B").replace('}', "%7D")
}

/// Whether `key` matches a glob `pattern` as Valkey's `MATCH` does for the subset we emit
/// (`*` and backslash escapes). Used by tests to check our escaping.
#[cfg(test)]
fn glob_matches(pattern: &[u8], key: &[u8]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((b'*', rest)) => (0..=key.len()).any(|i| glob_matches(rest, &key[i..])),
        Some((b'\\', rest)) => match (rest.split_first(), key.split_first()) {
            (Some((p, prest)), Some((k, krest))) => p == k && glob_matches(prest, krest),
            _ => false,
        },
        Some((p, rest)) => key.split_first().is_some_and(|(k, krest)| p == k && glob_matches(rest, krest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ns(model: &str, mla: bool, tp: (i64, i64), pp: (i64, i64), cp: (i64, i64)) -> Namespace {
        Namespace::new(model.into(), mla, tp, pp, cp).unwrap()
    }

    #[test]
    fn documented_formats() {
        assert_eq!(ns("m", false, (1, 4), (0, 1), (0, 1)).key(b"abc"), b"hicache:m:t1of4:abc");
        assert_eq!(ns("m", true, (1, 4), (0, 1), (0, 1)).key(b"abc"), b"hicache:m:mla:abc");
        assert_eq!(ns("m", false, (1, 4), (2, 3), (0, 1)).key(b"k"), b"hicache:m:t1of4.p2of3:k");
        assert_eq!(ns("m", true, (0, 2), (1, 2), (1, 2)).key(b"k"), b"hicache:m:mla.p1of2.c1of2:k");
        assert_eq!(ns("Qwen/Qwen3-8B", false, (0, 1), (0, 1), (0, 1)).key(b"k"), b"hicache:Qwen/Qwen3-8B:t0of1:k");
        assert_eq!(ns("a:b%c", false, (0, 1), (0, 1), (0, 1)).key(b"k"), b"hicache:a%3Ab%25c:t0of1:k");
        assert_eq!(ns("{tag}", true, (0, 1), (0, 1), (0, 1)).key(b"k"), b"hicache:%7Btag%7D:mla:k");
    }

    #[test]
    fn invalid_ranks_are_rejected() {
        for (tp, pp) in [((1, 1), (0, 1)), ((0, 0), (0, 1)), ((-1, 2), (0, 1)), ((0, 1), (2, 2))] {
            assert!(Namespace::new("m".into(), false, tp, pp, (0, 1)).is_err());
        }
        assert!(Namespace::new(String::new(), false, (0, 1), (0, 1), (0, 1)).is_err());
    }

    #[test]
    fn pattern_escapes_glob_characters() {
        let n = ns("we*ird?[x]\\", false, (0, 1), (0, 1), (0, 1));
        assert_eq!(n.model_pattern(), b"hicache:we\\*ird\\?\\[x\\]\\\\:*");
        assert!(glob_matches(&n.model_pattern(), &n.key(b"k")));
        assert!(!glob_matches(&n.model_pattern(), b"hicache:weXirdY[x]\\:t0of1:k"));
    }

    /// The keys the 0.1 format confused: an MLA key that looks like an MHA rank field, and a page
    /// key that looks like a pipeline-stage field.
    #[test]
    fn prefixes_cannot_be_forged_by_page_keys() {
        let mha0 = ns("m", false, (0, 1), (0, 1), (0, 1));
        let mla = ns("m", true, (0, 1), (0, 1), (0, 1));
        let stage1 = ns("m", false, (0, 1), (1, 2), (0, 1));
        assert_ne!(mla.key(b"t0of1:X"), mha0.key(b"X"));
        assert_ne!(mla.key(b"0:1:X"), mha0.key(b"X"));
        assert_ne!(mha0.key(b".p1of2:Y"), stage1.key(b"Y"));
        assert_ne!(mha0.key(b"pp1of2:Y"), stage1.key(b"Y"));
    }

    proptest! {
        // A model's pattern matches all its own keys and none of another model's keys.
        #[test]
        fn pattern_matches_exactly_its_model(a in "[ -~]{1,12}", b in "[ -~]{1,12}", key in proptest::collection::vec(any::<u8>(), 1..16), mla: bool) {
            let na = ns(&a, mla, (0, 2), (0, 1), (0, 1));
            let nb = ns(&b, !mla, (1, 2), (0, 1), (0, 1));
            prop_assert!(glob_matches(&na.model_pattern(), &na.key(&key)));
            prop_assert_eq!(glob_matches(&na.model_pattern(), &nb.key(&key)), a == b);
        }

        // Two different namespaces never produce the same full key, for any page keys.
        #[test]
        fn full_keys_are_unambiguous(
            ka in proptest::collection::vec(any::<u8>(), 1..12), kb in proptest::collection::vec(any::<u8>(), 1..12),
            ma in "[a-c:]{1,3}", mb in "[a-c:]{1,3}", mla_a: bool, mla_b: bool,
            tp_a in 0i64..2, pp_a in 0i64..3, cp_a in 0i64..2, tp_b in 0i64..2, pp_b in 0i64..3, cp_b in 0i64..2,
        ) {
            let pp = |i: i64| [(0, 1), (0, 2), (1, 2)][i as usize];
            let a = ns(&ma, mla_a, (tp_a, 2), pp(pp_a), (cp_a, 2));
            let b = ns(&mb, mla_b, (tp_b, 2), pp(pp_b), (cp_b, 2));
            if a.prefix() != b.prefix() {
                prop_assert_ne!(a.key(&ka), b.key(&kb));
            }
        }
    }
}
