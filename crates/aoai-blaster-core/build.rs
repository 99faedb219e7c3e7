//! Writes the ordinary tokens of each BPE vocabulary as two flat tables into `OUT_DIR`, taken
//! from tiktoken-rs (a build dependency only): `{name}.bytes`, every token's bytes one after
//! another in rank order, and `{name}.ends`, the end offset of each rank's bytes (u32, little
//! endian; a rank with no ordinary token, such as a special token's, ends where the one before
//! it does). The library counts tokens from these (`src/tokens/bpe.rs`), in a few MiB instead
//! of the ~40 MiB a tiktoken-rs `CoreBPE` holds.

use std::collections::HashSet;
use std::path::PathBuf;

type Build = fn() -> Option<tiktoken_rs::CoreBPE>;

/// Above every rank of these vocabularies (o200k's last special token is 200,018).
const RANK_LIMIT: u32 = 1 << 18;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let vocabularies: [(&str, Build); 4] = [
        ("o200k_base", || tiktoken_rs::o200k_base().ok()),
        ("cl100k_base", || tiktoken_rs::cl100k_base().ok()),
        ("p50k_base", || tiktoken_rs::p50k_base().ok()),
        ("r50k_base", || tiktoken_rs::r50k_base().ok()),
    ];
    for (name, build) in vocabularies {
        let bpe = build().expect("tiktoken-rs builds its own vocabulary");
        let special: HashSet<&str> = bpe.special_tokens();
        let mut bytes = Vec::new();
        let mut ends: Vec<u32> = Vec::new();
        let mut last_token = 0;
        for rank in 0..RANK_LIMIT {
            if let Ok(token) = bpe.decode_bytes(&[rank]) {
                let is_special = std::str::from_utf8(&token).is_ok_and(|t| special.contains(t));
                if !is_special {
                    bytes.extend_from_slice(&token);
                    last_token = rank as usize + 1;
                }
            }
            ends.push(u32::try_from(bytes.len()).expect("a vocabulary is under 4 GiB"));
        }
        ends.truncate(last_token);
        let ends: Vec<u8> = ends.iter().flat_map(|end| end.to_le_bytes()).collect();
        std::fs::write(out.join(format!("{name}.bytes")), bytes).expect("OUT_DIR is writable");
        std::fs::write(out.join(format!("{name}.ends")), ends).expect("OUT_DIR is writable");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
