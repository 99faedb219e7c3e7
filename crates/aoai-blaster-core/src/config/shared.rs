//! The `shared:` section: several processes drawing on the same deployments' quotas through
//! Redis. Absent, each process paces alone (today's in-process budgets).
//!
//! ```yaml
//! shared:
//!   redis_url: env:AOAI_BLASTER_REDIS_URL   # or redis://:password@host:6379/0
//!   key_prefix: aoai-blaster                # default
//!   expected_processes: 4                   # each takes 1/4 of every quota without Redis
//!   fallback: error                         # or `local`: start without Redis
//! ```

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::load::{found, unknown_key_message, unreadable};
use super::validate::{Problems, Scope, read_env_secret};
use crate::secret::Secret;

/// `shared.key_prefix` when not configured.
pub const DEFAULT_KEY_PREFIX: &str = "aoai-blaster";
/// The longest `shared.key_prefix`.
const MAX_KEY_PREFIX_LEN: usize = 100;

/// Keys accepted in `shared:` (kept in step with [`RawShared`] by a test).
pub(super) const SHARED_KEYS: &[&str] =
    &["redis_url", "key_prefix", "expected_processes", "fallback"];

/// The `shared:` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShared {
    /// `redis://[:password@]host[:port][/db]`, `redis+unix:///path/redis.sock`, or `"env:VAR"`.
    /// A secret: it may hold a password.
    pub redis_url: Secret,
    /// Prefix of every Redis key this process writes. Default `aoai-blaster`.
    pub key_prefix: Option<String>,
    /// How many processes share the deployments: without Redis each takes `1/N` of every quota.
    pub expected_processes: Option<u32>,
    /// Redis unreachable at start: `error` (default) or `local` (start with `1/N` budgets).
    pub fallback: Option<String>,
}

/// A validated `shared:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// Where Redis is.
    pub redis_url: RedisUrl,
    /// Prefix of every key (printable ASCII, no spaces, 1 to 100 characters).
    pub key_prefix: String,
    /// Processes expected to share the deployments (at least 1).
    pub expected_processes: u32,
    /// What to do when Redis cannot be reached at start.
    pub fallback: SharedFallback,
}

/// `shared.fallback`: what a process does when Redis cannot be reached at start. Lost mid-run,
/// Redis is always replaced by local budgets until it returns (no job may be lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedFallback {
    /// Refuse to start, with a clear error.
    #[default]
    Error,
    /// Start with local budgets of `1/expected_processes` of each quota, with a warning.
    Local,
}

impl SharedFallback {
    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedFallback::Error => "error",
            SharedFallback::Local => "local",
        }
    }
}

/// A Redis URL: the whole of it is a [`Secret`] (a password may be in it); [`RedisUrl::redacted`]
/// is the form for logs and reports.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: Secret,
    shown: String,
}

impl RedisUrl {
    /// Checks `text` (`redis://` or `redis+unix://`); the error says what is wrong without
    /// quoting the URL.
    ///
    /// ```
    /// use aoai_blaster_core::config::RedisUrl;
    /// let url = RedisUrl::parse("redis://:hunter2hunter2@cache.internal:6380/2").unwrap();
    /// assert_eq!(url.redacted(), "redis://***@cache.internal:6380/2");
    /// assert_eq!(url.expose(), "redis://:hunter2hunter2@cache.internal:6380/2");
    /// assert_eq!(format!("{url:?}"), "RedisUrl(redis://***@cache.internal:6380/2)");
    /// assert!(RedisUrl::parse("http://cache:6379").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let text = text.trim();
        let url = url::Url::parse(text).map_err(|e| {
            format!(
                "not a URL ({e}); use redis://[:password@]host[:port][/db] (rediss:// for \
                 TLS) or redis+unix:///path/to/redis.sock"
            )
        })?;
        let secret = Secret::new(text);
        // Passwords (`:password@`, or `?pass=` in a socket URL) are registered for `redact`,
        // should a client error ever quote them.
        let query_passwords = url
            .query_pairs()
            .filter(|(key, _)| key == "pass" || key == "password")
            .map(|(_, value)| value.into_owned());
        for password in url
            .password()
            .map(str::to_owned)
            .into_iter()
            .chain(query_passwords)
        {
            drop(Secret::new(password));
        }
        let userinfo = if url.username().is_empty() && url.password().is_none() {
            ""
        } else {
            "***@"
        };
        let shown = match url.scheme() {
            scheme @ ("redis" | "rediss") => {
                let host = url.host_str().filter(|h| !h.is_empty()).ok_or(format!(
                    "names no host; use {scheme}://[:password@]host[:port][/db]"
                ))?;
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                let path = url.path().trim_end_matches('/');
                format!("{scheme}://{userinfo}{host}{port}{path}")
            }
            "redis+unix" | "unix" => {
                if url.path().is_empty() || url.path() == "/" {
                    return Err("names no socket; use redis+unix:///path/to/redis.sock".to_owned());
                }
                format!("{}://{}", url.scheme(), url.path())
            }
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}; use redis://, rediss:// (TLS) or redis+unix://"
                ));
            }
        };
        Ok(RedisUrl { url: secret, shown })
    }

    /// The URL with its password: only for connecting.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// The URL without user, password or query: for logs, errors and reports.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.shown)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl RawShared {
    /// Checks every key, reporting each problem as `shared.<key>`; `None` when a required one
    /// is unusable.
    pub(super) fn check(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<SharedConfig> {
        let redis_url = self.check_url(env, problems);
        let key_prefix = self
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        let prefix_ok = !key_prefix.is_empty()
            && key_prefix.len() <= MAX_KEY_PREFIX_LEN
            && key_prefix.bytes().all(|b| b.is_ascii_graphic());
        if !prefix_ok {
            problems.add(
                Scope::Top,
                "shared.key_prefix",
                format!(
                    "must be 1 to {MAX_KEY_PREFIX_LEN} printable ASCII characters without \
                     spaces, got {key_prefix:?}; remove the key for {DEFAULT_KEY_PREFIX:?}"
                ),
            );
        }
        let expected_processes = match self.expected_processes {
            None => {
                problems.add(
                    Scope::Top,
                    "shared.expected_processes",
                    "missing; set it to how many processes share these deployments (without \
                     Redis each paces to 1/N of every quota)",
                );
                None
            }
            Some(0) => {
                problems.add(
                    Scope::Top,
                    "shared.expected_processes",
                    "must be at least 1, got 0",
                );
                None
            }
            Some(n) => Some(n),
        };
        let fallback = match self.fallback.as_deref().map(str::trim) {
            None => SharedFallback::Error,
            Some(name) if name.eq_ignore_ascii_case("error") => SharedFallback::Error,
            Some(name) if name.eq_ignore_ascii_case("local") => SharedFallback::Local,
            Some(name) => {
                problems.add(
                    Scope::Top,
                    "shared.fallback",
                    format!("unknown fallback {name:?}; use error or local"),
                );
                SharedFallback::Error
            }
        };
        Some(SharedConfig {
            redis_url: redis_url?,
            key_prefix,
            expected_processes: expected_processes?,
            fallback,
        })
    }

    fn check_url(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Problems,
    ) -> Option<RedisUrl> {
        let raw = self.redis_url.expose().trim();
        let checked = if raw.is_empty() {
            Err("missing; set it to redis://[:password@]host[:port][/db], \
                 redis+unix:///path/to/redis.sock or \"env:VAR\""
                .to_owned())
        } else if let Some(variable) = raw.strip_prefix("env:") {
            read_env_secret(variable, "the URL", env).and_then(|url| {
                RedisUrl::parse(&url).map_err(|e| format!("{} (from env:{variable})", e))
            })
        } else {
            RedisUrl::parse(raw)
        };
        checked
            .map_err(|message| problems.add(Scope::Top, "shared.redis_url", message))
            .ok()
    }
}

/// Reports the unreadable keys of a `shared:` value (unknown, or of the wrong type) and removes
/// them, so that the rest is still checked. False: not a map at all.
pub(super) fn sanitize(shared: &mut Value, problems: &mut Problems) -> bool {
    let Value::Object(fields) = shared else {
        problems.add(
            Scope::Top,
            "shared",
            format!(
                "expected a map with redis_url, expected_processes (and key_prefix, fallback), \
                 got {}",
                found(shared)
            ),
        );
        return false;
    };
    fields.retain(|_, v| !v.is_null());
    let mut keys: Vec<String> = fields.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let place = format!("shared.{key}");
        if !SHARED_KEYS.contains(&key.as_str()) {
            problems.add(
                Scope::Top,
                &place,
                unknown_key_message(&key, SHARED_KEYS, &[]),
            );
            fields.remove(&key);
            continue;
        }
        if let Some(message) = unreadable::<RawShared>(&key, &fields[&key]) {
            problems.add(Scope::Top, &place, message);
            problems.skip.insert((None, place));
            fields.remove(&key);
        }
    }
    true
}

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
