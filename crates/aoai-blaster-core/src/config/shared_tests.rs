use serde_json::json;

use super::*;
use crate::config::BlasterConfig;
use crate::config::test_support::{deployment, load, problems_of};

fn with_shared(shared: Value) -> Value {
    json!({"deployments": [deployment("a")], "shared": shared})
}

#[test]
fn absent_means_each_process_paces_alone() {
    let config = load(json!({"deployments": [deployment("a")]})).unwrap();
    assert_eq!(config.shared, None);
}

#[test]
fn a_full_section_with_the_url_from_the_environment() {
    let env = |name: &str| {
        (name == "REDIS_URL").then(|| " redis://:pa55w0rd-pa55w0rd@cache.internal:6380/3 ".into())
    };
    let value = with_shared(json!({
        "redis_url": "env:REDIS_URL",
        "key_prefix": "team-a",
        "expected_processes": 4,
        "fallback": "Local",
    }));
    let config = BlasterConfig::from_value_with_env(value, &env).unwrap();
    let shared = config.shared.unwrap();
    assert_eq!(
        shared.redis_url.expose(),
        "redis://:pa55w0rd-pa55w0rd@cache.internal:6380/3"
    );
    assert_eq!(
        shared.redis_url.redacted(),
        "redis://***@cache.internal:6380/3"
    );
    assert_eq!(shared.key_prefix, "team-a");
    assert_eq!(shared.expected_processes, 4);
    assert_eq!(shared.fallback, SharedFallback::Local);
    let shown = format!("{shared:?}");
    assert!(!shown.contains("pa55w0rd"), "{shown}");
    // Registered for redaction: a client error that quotes the password is cleaned.
    assert_eq!(
        crate::secret::redact("auth failed for pa55w0rd-pa55w0rd"),
        "auth failed for [REDACTED]"
    );
}

#[test]
fn defaults_and_unix_sockets() {
    let config = load(with_shared(json!({
        "redis_url": "redis+unix:///run/redis/redis.sock",
        "expected_processes": 1,
    })))
    .unwrap();
    let shared = config.shared.unwrap();
    assert_eq!(shared.key_prefix, DEFAULT_KEY_PREFIX);
    assert_eq!(shared.fallback, SharedFallback::Error);
    assert_eq!(
        shared.redis_url.redacted(),
        "redis+unix:///run/redis/redis.sock"
    );
    // TLS (Azure Cache for Redis listens on 6380), shown without its password.
    let config = load(with_shared(json!({
        "redis_url": "rediss://:s3cr3t-s3cr3t@cache.redis.cache.windows.net:6380",
        "expected_processes": 2,
    })))
    .unwrap();
    assert_eq!(
        config.shared.unwrap().redis_url.redacted(),
        "rediss://***@cache.redis.cache.windows.net:6380"
    );
}

#[test]
fn every_problem_of_the_section_at_once() {
    assert_eq!(
        problems_of(with_shared(json!({
            "key_prefix": "my prefix",
            "expected_processes": 0,
            "fallback": "maybe",
            "fallbak": "local",
        }))),
        [
            "shared.fallbak: unknown key; did you mean `fallback`?",
            "shared.redis_url: missing; set it to redis://[:password@]host[:port][/db], \
             redis+unix:///path/to/redis.sock or \"env:VAR\"",
            "shared.key_prefix: must be 1 to 100 printable ASCII characters without spaces, \
             got \"my prefix\"; remove the key for \"aoai-blaster\"",
            "shared.expected_processes: must be at least 1, got 0",
            "shared.fallback: unknown fallback \"maybe\"; use error or local",
        ]
    );
    assert_eq!(
        problems_of(with_shared(
            json!({"redis_url": 6379, "expected_processes": "four"})
        )),
        [
            "shared.expected_processes: invalid type: string \"four\", expected a whole number \
             from 0 to 4294967295",
            "shared.redis_url: must be a text value: put it in quotes (the value is not shown)",
        ]
    );
    assert_eq!(
        problems_of(with_shared(json!("redis://cache"))),
        [
            "shared: expected a map with redis_url, expected_processes (and key_prefix, \
             fallback), got a string (\"redis://cache\")"
        ]
    );
    assert_eq!(
        problems_of(with_shared(json!({"redis_url": "redis://cache"}))),
        [
            "shared.expected_processes: missing; set it to how many processes share these \
             deployments (without Redis each paces to 1/N of every quota)"
        ]
    );
}

#[test]
fn bad_urls_are_explained_without_quoting_them() {
    let problem = |url: &str| {
        let problems = problems_of(with_shared(json!({
            "redis_url": url, "expected_processes": 2
        })));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].contains("s3cr3t-s3cr3t"), "{problems:?}");
        problems[0].clone()
    };
    assert_eq!(
        problem("rediss://:s3cr3t-s3cr3t@/0"),
        "shared.redis_url: not a URL (empty host); use redis://[:password@]host[:port][/db] \
         (rediss:// for TLS) or redis+unix:///path/to/redis.sock"
    );
    assert_eq!(
        problem("http://:s3cr3t-s3cr3t@cache:6379"),
        "shared.redis_url: unsupported scheme \"http\"; use redis://, rediss:// (TLS) or \
         redis+unix://"
    );
    assert_eq!(
        problem("cache:s3cr3t-s3cr3t"),
        "shared.redis_url: unsupported scheme \"cache\"; use redis://, rediss:// (TLS) or \
         redis+unix://"
    );
    assert_eq!(
        problem("s3cr3t-s3cr3t"),
        "shared.redis_url: not a URL (relative URL without a base); use \
         redis://[:password@]host[:port][/db] (rediss:// for TLS) or \
         redis+unix:///path/to/redis.sock"
    );
    assert_eq!(
        problem("redis+unix://"),
        "shared.redis_url: names no socket; use redis+unix:///path/to/redis.sock"
    );
    assert_eq!(
        problem("env:NOT_SET_ANYWHERE"),
        "shared.redis_url: environment variable NOT_SET_ANYWHERE is not set; export it, or \
         put the URL here"
    );
}

#[test]
fn key_list_matches_the_struct() {
    let error = serde_json::from_value::<RawShared>(json!({"zzz": 1}))
        .unwrap_err()
        .to_string();
    let listed = error.split("expected one of ").nth(1).unwrap();
    let mut fields: Vec<&str> = listed.split(", ").map(|f| f.trim_matches('`')).collect();
    fields.sort_unstable();
    let mut keys = SHARED_KEYS.to_vec();
    keys.sort_unstable();
    assert_eq!(fields, keys);
}
