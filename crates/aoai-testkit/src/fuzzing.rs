//! [`fuzz_config`]: the settings of the property tests that feed parsers hostile input (the
//! `fuzz` test modules of aoai-blaster-core and aoai-blaster-cli).
//!
//! CI runs 256 cases from a fixed seed, so a red run always means a real change. Proptest's
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both: `just fuzz` runs the `fuzz` modules
//! with many cases and a fresh seed, and prints the seed so a failure can be replayed.

use proptest::test_runner::{Config, RngSeed};

/// The seed when `PROPTEST_RNG_SEED` is not set.
const SEED: u64 = 0x5eed_2026;

/// 256 cases from a fixed seed, unless the environment says otherwise.
pub fn fuzz_config() -> Config {
    let from_env = Config::default();
    Config {
        rng_seed: match from_env.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            seed => seed,
        },
        ..from_env
    }
}
