# Recipes mirror README; every one is also written out there as plain commands.
# `just` is not on a fresh machine: `cargo install just` first, or copy the commands.

# The main job: the demo against the embedded simulator.
demo requests="3000":
    cargo run --release -p aoai-blaster-cli -- demo --requests {{requests}}

# Unit, integration and doc tests.
test:
    cargo test --workspace

# Formatting, lints and docs exactly as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

# Property tests of the parsers (the `fuzz` test modules) with many cases and a fresh seed,
# printed first so that a failure can be replayed with PROPTEST_RNG_SEED=<seed>. CI runs the
# same tests with 256 cases from a fixed seed.
fuzz cases="100000":
    #!/usr/bin/env sh
    set -e
    seed="${PROPTEST_RNG_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
    echo "PROPTEST_RNG_SEED=$seed PROPTEST_CASES={{cases}}"
    PROPTEST_CASES={{cases}} PROPTEST_RNG_SEED="$seed" cargo test -p aoai-blaster-core -p aoai-blaster-cli --lib fuzz

# Everything CI runs.
ci:
    bash .ci/run

# Benchmarks (release builds), printing their figures: simulator throughput; aoai-blaster's
# overhead (200,000 jobs: jobs/s, CPU per job, added latency at 5,000 and 10,000 req/s); CLI
# peak RSS with 1,000,000 JSONL lines; 1,000,000 embeddings beside as many chat jobs; side by side with the Python azure-openai-blaster 0.1.0
# (installed from PyPI into target/aoai-bench-venv; needs python3 with venv).
bench:
    cargo bench -p aoai-sim --bench sim_throughput
    cargo run --release -p aoai-bench --bin overhead
    cargo bench -p aoai-blaster-cli --bench rss_stream
    cargo bench -p aoai-blaster-cli --bench soak
    cargo bench -p aoai-blaster-cli --bench embed_throughput
    cargo run --release -p aoai-bench --bin compare-python

# The simulator, standalone, with the example config.
sim config="examples/sim.yaml":
    cargo run --release -p aoai-sim -- --config {{config}}

# Examples against the embedded simulator.
examples:
    cargo run --release --example quickstart
    cargo run --release --example actix_app

# The gateway (`aoai-blaster serve`) against two zero-latency upstreams (the simulator, then
# nginx answering a fixed completion), side by side with direct requests: wrk's closed loop
# (added p50/p99, max req/s), oha's open loop at fixed rates, idle RSS. Installs Debian's wrk and
# nginx-light, and oha (crates.io) into target/tools, when missing.
bench-gateway *args:
    #!/usr/bin/env sh
    set -e
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    if ! command -v wrk >/dev/null; then $sudo apt-get update -q && $sudo apt-get install -y -q wrk; fi
    if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then $sudo apt-get install -y -q nginx-light; fi
    if ! [ -x target/tools/bin/oha ]; then cargo install oha --locked --root target/tools; fi
    cargo run --release -p aoai-bench --bin gateway -- {{args}}

# Quota pacing benchmark (release): makespan vs the theoretical minimum and 429s, per strategy.
bench-quota *args:
    cargo run --release -p aoai-bench --bin bench-quota -- {{args}}

# Shared quotas end to end: the quota batch split between 1, 2 and 4 `aoai-blaster run`
# processes, with and without `shared:` (one simulator, one redis-server).
bench-processes *args:
    cargo build --release -p aoai-blaster-cli
    cargo run --release -p aoai-bench --bin bench-quota -- --processes 1,2,4 {{args}}

# Shared quotas, the Redis side: Redis calls and time per job at 10,000 jobs/s for 1, 2 and 4
# processes, against a redis-server the bench starts on a unix socket.
bench-shared *args:
    cargo run --release -p aoai-bench --bin bench-shared -- {{args}}
