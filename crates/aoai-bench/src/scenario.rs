//! The quota scenario of `bench-quota`: three simulated deployments with different quotas, and
//! a reproducible batch of mixed jobs. Its runs in one process and across several CLI
//! processes ([`crate::processes`]) use the same deployments and jobs.

use aoai_sim::{DeploymentSpec, LatencySpec, MinimumJob, SimConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// One simulated deployment of the scenario.
#[derive(Clone, Copy, Debug)]
pub struct Quota {
    /// Its name (and Azure deployment name).
    pub name: &'static str,
    /// Tokens per minute.
    pub tpm: u64,
    /// The `weighted` strategy's weight.
    pub weight: u32,
    /// The `priority` strategy's group.
    pub priority: i32,
}

/// Three deployments with different TPM limits; RPM is the gpt-4o ratio, 6 per 1,000 TPM.
pub const QUOTAS: [Quota; 3] = [
    Quota {
        name: "large",
        tpm: 300_000,
        weight: 4,
        priority: 1,
    },
    Quota {
        name: "medium",
        tpm: 150_000,
        weight: 2,
        priority: 0,
    },
    Quota {
        name: "small",
        tpm: 75_000,
        weight: 1,
        priority: 2,
    },
];

const RPM_PER_1000_TPM: u64 = 6;
/// The simulator's time to first token (ms).
pub const TTFT_MS: u64 = 40;
/// The simulator's time per completion token (ms).
pub const PER_TOKEN_MS: u64 = 1;
/// Completion tokens of a reply (fewer when `max_tokens` is lower).
pub const REPLY_TOKENS: u64 = 40;

impl Quota {
    /// Requests per minute: 6 per 1,000 TPM.
    pub fn rpm(&self) -> u64 {
        self.tpm * RPM_PER_1000_TPM / 1000
    }

    /// The simulator's deployment, default accounting.
    pub fn spec(&self) -> DeploymentSpec {
        DeploymentSpec::new(self.name)
            .tpm(self.tpm)
            .rpm(self.rpm())
            .reply_tokens(REPLY_TOKENS)
            .latency(LatencySpec {
                ttft_ms: TTFT_MS,
                per_token_ms: PER_TOKEN_MS,
                jitter_ms: 0,
            })
    }

    /// The deployment in a blaster config served by the simulator at `endpoint`; with
    /// `limits`, its `tpm_limit` and `rpm_limit` as Azure's portal shows them.
    pub fn deployment(&self, endpoint: &str, limits: bool) -> Value {
        let mut entry = json!({
            "name": self.name,
            "endpoint": endpoint,
            "api_key": aoai_sim::DEFAULT_API_KEY,
            "model": self.name,
            "weight": self.weight,
            "priority": self.priority,
        });
        if limits {
            entry["tpm_limit"] = json!(self.tpm);
            entry["rpm_limit"] = json!(self.rpm());
        }
        entry
    }
}

/// The simulator of the scenario with the default accounting.
pub fn sim_config() -> SimConfig {
    QUOTAS.iter().fold(SimConfig::default(), |config, quota| {
        config.deployment(quota.spec())
    })
}

/// One job of the batch: its prompt and `max_tokens`.
#[derive(Clone, Debug)]
pub struct Job {
    /// The chat messages.
    pub messages: Vec<Value>,
    /// `max_tokens`.
    pub max_tokens: u64,
}

impl Job {
    /// The job as [`aoai_sim::minimum_makespan`] takes it.
    pub fn to_minimum(&self) -> MinimumJob {
        MinimumJob::new(self.messages.clone(), Some(self.max_tokens))
    }

    /// The job's request body.
    pub fn body(&self) -> Value {
        json!({"messages": self.messages, "max_tokens": self.max_tokens})
    }
}

const WORDS: [&str; 16] = [
    "quota",
    "window",
    "token",
    "request",
    "deployment",
    "latency",
    "batch",
    "minute",
    "azure",
    "model",
    "prompt",
    "answer",
    "limit",
    "pacing",
    "router",
    "endpoint",
];

/// A batch of mixed prompt sizes (70 % short, 25 % medium, 5 % long) and `max_tokens`.
pub fn batch(jobs: usize, seed: u64) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..jobs)
        .map(|i| {
            let size = rng.random_range(0..100u32);
            let words = match size {
                0..70 => rng.random_range(15..60),
                70..95 => rng.random_range(120..300),
                _ => rng.random_range(600..1200),
            };
            let mut text = format!("Job {i}:");
            for _ in 0..words {
                text.push(' ');
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            }
            let max_tokens = [16, 64, 128, 256, 512][rng.random_range(0..5)];
            Job {
                messages: vec![
                    json!({"role": "system", "content": "Answer briefly."}),
                    json!({"role": "user", "content": text}),
                ],
                max_tokens,
            }
        })
        .collect()
}
