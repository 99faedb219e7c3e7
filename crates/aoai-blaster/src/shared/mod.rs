//! Shared quotas, the Redis side: [`SharedRedis`] runs the lease protocol of
//! [`aoai_blaster_core::shared`] against a real Redis (or Valkey) with atomic Lua scripts.
//!
//! - `scripts/renew.lua` gives a lease back and grants the next in one call, by Redis' own
//!   `TIME` (one clock for every process), with the rule of
//!   [`LeaseLedger`](aoai_blaster_core::shared::LeaseLedger); its keys expire by themselves, so
//!   the leases of a process that died vanish.
//! - `scripts/carry.lua` counts what a process charged while Redis did not see it.
//! - `scripts/note.lua` writes shared health (a 429's wait, a rejection, a recovery) as keys
//!   with expiry; [`SharedRedis::health`] reads them for many deployments in one round trip, so
//!   a process that polls every
//!   [`HEALTH_POLL`](aoai_blaster_core::shared::HEALTH_POLL) sees another's 429 within a
//!   second.
//!
//! - [`RedisUse`] is what it cost: calls made and each ask's round trip, as the Dispatcher
//!   measured them.
//!
//! Redis 5 or newer (the scripts read `TIME` before they write), or Valkey; over TLS with
//! `rediss://`, verified against the system's trusted certificates (`SSL_CERT_FILE` names
//! others, e.g. a private CA).
//!
//! Every call is bounded ([`CALL_TIMEOUT`]); a failure drops the connection, and the next call
//! connects again, so a Redis that comes back is used again without a restart. Errors never
//! show the URL's password.

use std::sync::LazyLock;
use std::time::Duration;

use aoai_blaster_core::config::RedisUrl;
use aoai_blaster_core::quota::Cost;
use aoai_blaster_core::secret::redact;
use aoai_blaster_core::shared::{
    Carry, Grant, HealthNote, LeaseLimits, LeaseSpans, RECOVERED_TTL, Renewal, SharedHealth,
    SharedKeys,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use crate::tls::TrustedCas;

mod usage;
pub use usage::RedisUse;

/// The longest a connection attempt or a call may take before Redis counts as gone.
pub const CALL_TIMEOUT: Duration = aoai_blaster_core::shared::ASK_TIMEOUT;

/// A Redis call that failed: what was being done and why (redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared quotas: redis {action} at {url} failed: {message}")]
pub struct SharedError {
    /// What was being done: `connect`, `renew`, ...
    pub action: &'static str,
    /// The URL without its password.
    pub url: String,
    /// Why (redacted).
    pub message: String,
}

/// Whether `url` is a `rediss://` one (schemes are case-insensitive).
fn is_tls(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// One process's connection to the shared quotas in Redis.
pub struct SharedRedis {
    client: redis::Client,
    url: String,
    conn: Option<MultiplexedConnection>,
    operations: u64,
}

static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/renew.lua")));
static CARRY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/carry.lua")));
static NOTE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/note.lua")));

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis")
            .field("url", &self.url)
            .field("connected", &self.conn.is_some())
            .field("operations", &self.operations)
            .finish()
    }
}

impl SharedRedis {
    /// A client for `url`; nothing is sent until the first call ([`SharedRedis::ping`] checks
    /// that Redis answers). `rediss://` trusts the CAs of the file `SSL_CERT_FILE` names, else
    /// the system's.
    pub fn new(url: &RedisUrl) -> Result<SharedRedis, SharedError> {
        let trust = TrustedCas::from_env().map_err(|e| SharedError {
            action: "open",
            url: url.redacted().to_owned(),
            message: e.to_string(),
        })?;
        Self::trusting(url, &trust)
    }

    /// A client for `url` that verifies a `rediss://` server against `trust`'s CA file when
    /// it has one, else against the system's CAs (see `tls.rs`).
    pub(crate) fn trusting(url: &RedisUrl, trust: &TrustedCas) -> Result<SharedRedis, SharedError> {
        // `rediss://` builds a rustls config on connecting.
        crate::tls::install_crypto_provider();
        let shown = url.redacted().to_owned();
        let client = match trust.redis_certificates() {
            Some(certificates) if is_tls(url.expose()) => {
                redis::Client::build_with_tls(url.expose(), certificates)
            }
            _ => redis::Client::open(url.expose()),
        };
        let client = client.map_err(|e| SharedError {
            action: "open",
            url: shown.clone(),
            message: redact(&e.to_string()).into_owned(),
        })?;
        Ok(SharedRedis {
            client,
            url: shown,
            conn: None,
            operations: 0,
        })
    }

    /// Redis calls made so far (each a round trip; a script's first load on a fresh server
    /// adds one).
    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// Checks that Redis answers, on a connection of its own that blocks the calling thread
    /// for at most [`CALL_TIMEOUT`] twice (connect, reply): the one check at start, which must
    /// answer before the Dispatcher exists.
    pub fn ping_blocking(&mut self) -> Result<(), SharedError> {
        self.operations += 1;
        let reply = self
            .client
            .get_connection_with_timeout(CALL_TIMEOUT)
            .and_then(|mut conn| {
                conn.set_read_timeout(Some(CALL_TIMEOUT))?;
                conn.set_write_timeout(Some(CALL_TIMEOUT))?;
                redis::cmd("PING").query::<String>(&mut conn)
            });
        reply
            .map(drop)
            .map_err(|e| self.error("ping", e.to_string()))
    }

    /// Checks that Redis answers (connecting first if need be): the probe of a lost link.
    pub async fn ping(&mut self) -> Result<(), SharedError> {
        let mut conn = self.connection().await?;
        let reply: Result<String, _> = self
            .bounded("ping", redis::cmd("PING").query_async(&mut conn))
            .await;
        reply.map(drop)
    }

    /// Performs `renewal` for the deployment of `keys` with `limits` and `spans`: gives back
    /// its lease and asks for the next in one script call. `None` when nothing was asked.
    pub async fn renew(
        &mut self,
        keys: &SharedKeys,
        limits: LeaseLimits,
        spans: LeaseSpans,
        renewal: &Renewal,
    ) -> Result<Option<Grant>, SharedError> {
        let (back_id, used, last_use) = renewal.give_back.map_or((0, Cost::default(), 0), |b| {
            (b.id, b.used, millis(b.last_use))
        });
        let ask = renewal.ask.unwrap_or_default();
        let limit = |l: Option<u64>| l.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut invocation = RENEW.prepare_invoke();
        for key in keys.quota() {
            invocation.key(key);
        }
        invocation
            .key(keys.cooling())
            .arg(back_id)
            .arg(used.tokens)
            .arg(used.requests)
            .arg(last_use)
            .arg(u8::from(renewal.ask.is_some()))
            .arg(ask.want.tokens)
            .arg(ask.want.requests)
            .arg(ask.at_least.tokens)
            .arg(ask.at_least.requests)
            .arg(limit(limits.tokens_per_minute))
            .arg(limit(limits.requests_per_minute.map(u64::from)))
            .arg(limit(limits.requests_per_window.map(u64::from)))
            .arg(millis(spans.ttl))
            .arg(millis(spans.minute))
            .arg(millis(spans.window));
        let mut conn = self.connection().await?;
        let reply: Vec<i64> = self
            .bounded("renew", invocation.invoke_async(&mut conn))
            .await?;
        let grant = match reply.as_slice() {
            [0] => None,
            [1, id, tokens, requests] => Some(Grant::Granted {
                id: u64::try_from(*id).unwrap_or_default(),
                cost: Cost {
                    tokens: u64::try_from(*tokens).unwrap_or_default(),
                    requests: u32::try_from(*requests).unwrap_or(u32::MAX),
                },
            }),
            [2, wait] => Some(Grant::Wait(Duration::from_millis(
                u64::try_from(*wait).unwrap_or_default(),
            ))),
            other => {
                return Err(self.error("renew", format!("unexpected reply {other:?}")));
            }
        };
        Ok(grant)
    }

    /// Counts `carries` (use Redis did not see) for the deployment of `keys`.
    pub async fn carry(
        &mut self,
        keys: &SharedKeys,
        spans: LeaseSpans,
        carries: &[Carry],
    ) -> Result<(), SharedError> {
        if carries.is_empty() {
            return Ok(());
        }
        let mut invocation = CARRY.prepare_invoke();
        for key in keys.quota() {
            invocation.key(key);
        }
        invocation.arg(millis(spans.ttl + spans.minute));
        for carry in carries {
            invocation
                .arg(carry.cost.tokens)
                .arg(carry.cost.requests)
                .arg(millis(carry.minute_left).max(1))
                .arg(millis(carry.window_left));
        }
        let mut conn = self.connection().await?;
        let _: i64 = self
            .bounded("carry", invocation.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Writes `note` for the other processes.
    pub async fn note(&mut self, keys: &SharedKeys, note: &HealthNote) -> Result<(), SharedError> {
        let (kind, ms, reason) = match note {
            HealthNote::Cooling { wait } => ("cool", millis(*wait).max(1), ""),
            HealthNote::Disabled { reason, ttl } => {
                ("disable", millis(*ttl).max(1), reason.as_str())
            }
            HealthNote::Recovered => ("recover", millis(RECOVERED_TTL), ""),
        };
        let mut invocation = NOTE.prepare_invoke();
        invocation
            .key(keys.cooling())
            .key(keys.disabled())
            .key(keys.recovered())
            .arg(kind)
            .arg(ms)
            .arg(reason);
        let mut conn = self.connection().await?;
        let _: i64 = self
            .bounded("note", invocation.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    /// The shared health of each deployment of `keys`, in one round trip.
    pub async fn health(&mut self, keys: &[SharedKeys]) -> Result<Vec<SharedHealth>, SharedError> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("PTTL").arg(k.cooling());
            pipe.cmd("GET").arg(k.disabled());
            pipe.cmd("PTTL").arg(k.disabled());
            pipe.cmd("EXISTS").arg(k.recovered());
        }
        let mut conn = self.connection().await?;
        let replies: Vec<(i64, Option<String>, i64, bool)> =
            self.bounded("health", pipe.query_async(&mut conn)).await?;
        let left = |ms: i64| {
            u64::try_from(ms)
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
        };
        Ok(replies
            .into_iter()
            .map(|(cooling, reason, disabled, recovered)| SharedHealth {
                cooling_for: left(cooling),
                disabled: reason.zip(left(disabled)),
                recovered,
            })
            .collect())
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, SharedError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error("connect", e.to_string()))?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Counts one call, bounds it by [`CALL_TIMEOUT`], and drops the connection when it fails
    /// (the next call connects again).
    async fn bounded<T>(
        &mut self,
        action: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SharedError> {
        self.operations += 1;
        let result = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", CALL_TIMEOUT.as_millis()),
        };
        self.conn = None;
        Err(self.error(action, result))
    }

    fn error(&self, action: &'static str, message: String) -> SharedError {
        SharedError {
            action,
            url: self.url.clone(),
            message: redact(&message).into_owned(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
