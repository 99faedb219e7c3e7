//! Token counting: this crate's compact counter against tiktoken-rs's `CoreBPE` (what it
//! replaced), in one process: resident memory each adds when built, build time, and µs to
//! count a typical prompt (o200k_base and cl100k_base). Prints a table.
//!
//! `cargo bench -p aoai-blaster-core --bench token_count`

use std::hint::black_box;
use std::time::{Duration, Instant};

use aoai_blaster_core::tokens::Encoding;

/// Resident memory of this process, in MiB (Linux), 0 where unknown.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        });
    kib.unwrap_or(0.0) / 1024.0
}

/// A typical chat prompt's text: instructions, a question, some code, some JSON (1,124 bytes).
fn prompt() -> String {
    let system = "You are a careful assistant for a support team. Answer in two or three \
        sentences, cite the ticket number, and never invent facts. If the customer's \
        question is unclear, ask one short question back. ";
    let user = "Ticket #48213: since the update on 2026-11-02 our nightly export fails with \
        `Error 0x80070005: access denied` after 1,024 rows. Logs below.\n\
        fn export(rows: &[Row]) -> Result<(), Error> {\n    for (i, row) in rows.iter().enumerate() {\n        \
        writer.write_record(&row.fields)?;\n    }\n    Ok(())\n}\n\
        {\"job\": \"nightly\", \"rows\": 1024, \"status\": \"failed\", \"retry\": false}\n";
    format!("{}{}", system.repeat(2), user.repeat(2))
}

/// Mean µs per call of `count` over about half a second.
fn micros_per_count(count: impl Fn(&str) -> usize, text: &str) -> (f64, usize) {
    let tokens = count(text);
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < Duration::from_millis(500) {
        for _ in 0..100 {
            black_box(count(black_box(text)));
        }
        calls += 100;
    }
    (
        started.elapsed().as_secs_f64() * 1e6 / f64::from(calls),
        tokens,
    )
}

fn main() {
    let text = prompt();
    println!("prompt: {} bytes", text.len());
    println!("| encoding | counter | RSS added | build | µs per prompt | tokens |");
    println!("|---|---|---|---|---|---|");
    type Reference = fn() -> Option<tiktoken_rs::CoreBPE>;
    let cases: [(Encoding, Reference); 2] = [
        (Encoding::O200kBase, || tiktoken_rs::o200k_base().ok()),
        (Encoding::Cl100kBase, || tiktoken_rs::cl100k_base().ok()),
    ];
    for (encoding, reference) in cases {
        // Ours first, so that tiktoken-rs's tables, freed or not, do not hide ours.
        let before = rss_mib();
        let started = Instant::now();
        let built = aoai_blaster_core::tokens::warm_up(encoding.name());
        let build = started.elapsed();
        let added = rss_mib() - before;
        let count = |t: &str| encoding.count(t).unwrap_or(0) as usize;
        let (micros, tokens) = micros_per_count(count, &text);
        println!(
            "| {} | aoai-blaster-core{} | {added:.1} MiB | {} ms | {micros:.1} | {tokens} |",
            encoding.name(),
            if built { "" } else { " (NOT BUILT)" },
            build.as_millis()
        );
        let before = rss_mib();
        let started = Instant::now();
        let Some(core_bpe) = reference() else {
            println!(
                "| {} | tiktoken-rs | did not build | | | |",
                encoding.name()
            );
            continue;
        };
        let build = started.elapsed();
        let added = rss_mib() - before;
        let (micros, tokens) = micros_per_count(|t| core_bpe.count_ordinary(t), &text);
        println!(
            "| {} | tiktoken-rs CoreBPE | {added:.1} MiB | {} ms | {micros:.1} | {tokens} |",
            encoding.name(),
            build.as_millis()
        );
    }
}
