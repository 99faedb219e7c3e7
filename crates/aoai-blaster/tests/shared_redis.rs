//! The shared-quota protocol against a real redis-server that each test starts itself (on a
//! unix socket of its own): two clients in one test act as two processes.

use std::time::{Duration, Instant};

use aoai_blaster::core::config::{RedisUrl, SharedFallback};
use aoai_blaster::core::quota::Cost;
use aoai_blaster::core::shared::{
    Grant, HealthNote, LEASE_TTL, LeaseAsk, LeaseLimits, LeaseSpans, LeaseWait, LinkChange,
    RedisLink, Renewal, SharedKeys, SharedQuota,
};
use aoai_blaster::shared::SharedRedis;
use aoai_testkit::RedisServer;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn job(tokens: u64) -> Cost {
    Cost {
        tokens,
        requests: 1,
    }
}

fn url(redis: &RedisServer) -> RedisUrl {
    RedisUrl::parse(&redis.url()).unwrap()
}

fn keys(prefix: &str) -> SharedKeys {
    SharedKeys::new(prefix, "https://res.openai.azure.com/", "gpt-4o")
}

/// 10,000 TPM, no RPM limit.
fn limits() -> LeaseLimits {
    LeaseLimits::new(None, Some(10_000), S)
}

/// Leases usable for 100 ms, counted 300 ms: a test can see them run out.
fn short_spans() -> LeaseSpans {
    LeaseSpans {
        ttl: 100 * MS,
        minute: 300 * MS,
        window: 300 * MS,
    }
}

/// One process: its quota state machine and its Redis client.
struct Process {
    quota: SharedQuota,
    redis: SharedRedis,
    keys: SharedKeys,
    spans: LeaseSpans,
}

impl Process {
    fn new(redis: &RedisServer, keys: SharedKeys, spans: LeaseSpans, processes: u32) -> Self {
        Process {
            quota: SharedQuota::new(limits(), processes, spans),
            redis: SharedRedis::new(&url(redis)).unwrap(),
            keys,
            spans,
        }
    }

    /// Charges `cost` now, renewing through Redis as the quota asks: the charge's lease, or
    /// the wait.
    async fn charge(&mut self, cost: Cost) -> Result<u64, LeaseWait> {
        loop {
            match self.quota.try_charge(Instant::now(), cost) {
                Ok(charge) => return Ok(charge.lease),
                Err(LeaseWait::Renewal) => {}
                Err(wait) => return Err(wait),
            }
            let renewal = self.quota.next_renewal(Instant::now()).unwrap();
            let grant = self
                .redis
                .renew(&self.keys, limits(), self.spans, &renewal)
                .await
                .unwrap()
                .unwrap();
            self.quota.granted(Instant::now(), grant);
        }
    }
}

async fn ask(redis: &mut SharedRedis, keys: &SharedKeys, at_least: u64, want: u64) -> Grant {
    let renewal = Renewal {
        give_back: None,
        ask: Some(LeaseAsk {
            want: Cost {
                tokens: want,
                requests: 0,
            },
            at_least: Cost {
                tokens: at_least,
                requests: 0,
            },
        }),
    };
    redis
        .renew(keys, limits(), LeaseSpans::new(LEASE_TTL, S), &renewal)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn two_processes_share_one_minute_of_tokens_exactly() {
    let redis = RedisServer::start().unwrap();
    let spans = LeaseSpans::new(LEASE_TTL, S);
    let mut a = Process::new(&redis, keys("share"), spans, 2);
    // The other process names the same Azure deployment differently: the same keys.
    let same = SharedKeys::new("share", "https://RES.openai.azure.com:443", "gpt-4o");
    let mut b = Process::new(&redis, same, spans, 2);
    let (mut charged, mut jobs) = (0u64, 0u64);
    loop {
        let (ra, rb) = (a.charge(job(1_000)).await, b.charge(job(1_000)).await);
        for r in [&ra, &rb] {
            if r.is_ok() {
                charged += 1_000;
                jobs += 1;
            }
        }
        assert!(charged <= 10_000, "{charged} tokens charged in one minute");
        if ra.is_err() && rb.is_err() {
            for r in [ra, rb] {
                assert!(matches!(r, Err(LeaseWait::NotUntil(_))), "{r:?}");
            }
            break;
        }
    }
    assert_eq!((charged, jobs), (10_000, 10));
    // A third process finds nothing left until the first lease has counted its minute.
    let mut observer = SharedRedis::new(&url(&redis)).unwrap();
    match ask(&mut observer, &keys("share"), 1, 1).await {
        Grant::Wait(wait) => assert!(
            wait > spans.minute - 5 * S && wait <= spans.ttl + spans.minute,
            "{wait:?}"
        ),
        other => panic!("expected a wait, got {other:?}"),
    }
    // Another prefix is another quota.
    assert!(matches!(
        ask(&mut observer, &keys("other"), 10_000, 10_000).await,
        Grant::Granted {
            cost: Cost { tokens: 10_000, .. },
            ..
        }
    ));
    // Renewals, not jobs, reach Redis: the two processes made 10 + 2 calls at most for 10
    // jobs even starting cold (the first lease of each is one job's worth).
    assert!(a.redis.operations() + b.redis.operations() <= 12);
}

#[tokio::test]
async fn leases_given_back_free_their_unused_room_at_once() {
    let redis = RedisServer::start().unwrap();
    let mut a = SharedRedis::new(&url(&redis)).unwrap();
    let mut b = SharedRedis::new(&url(&redis)).unwrap();
    let k = keys("giveback");
    let Grant::Granted { id, cost } = ask(&mut a, &k, 1_000, 8_000).await else {
        panic!("expected a grant");
    };
    assert_eq!(cost.tokens, 8_000);
    assert_eq!(
        ask(&mut b, &k, 1_000, 9_000).await,
        Grant::Granted {
            id: id + 1,
            cost: Cost {
                tokens: 2_000,
                requests: 0
            }
        }
    );
    // A used 3,000 of its 8,000: 5,000 come back for B.
    let back = Renewal {
        give_back: Some(aoai_blaster::core::shared::LeaseReturn {
            id,
            used: Cost {
                tokens: 3_000,
                requests: 0,
            },
            last_use: 10 * MS,
        }),
        ask: None,
    };
    let spans = LeaseSpans::new(LEASE_TTL, S);
    assert_eq!(a.renew(&k, limits(), spans, &back).await.unwrap(), None);
    assert!(matches!(
        ask(&mut b, &k, 1_000, 9_000).await,
        Grant::Granted {
            cost: Cost { tokens: 5_000, .. },
            ..
        }
    ));
    assert!(matches!(ask(&mut b, &k, 1, 1).await, Grant::Wait(_)));
}

#[tokio::test]
async fn a_dead_process_lease_runs_out_by_itself() {
    let redis = RedisServer::start().unwrap();
    let k = keys("dead");
    let spans = short_spans();
    let mut a = Process::new(&redis, k.clone(), spans, 1);
    // A takes the whole quota, then dies without giving its lease back.
    let mut dying = SharedRedis::new(&url(&redis)).unwrap();
    let take_all = Renewal {
        give_back: None,
        ask: Some(LeaseAsk {
            want: job(10_000),
            at_least: job(10_000),
        }),
    };
    let taken = dying.renew(&k, limits(), spans, &take_all).await.unwrap();
    assert!(matches!(taken, Some(Grant::Granted { .. })), "{taken:?}");
    drop(dying);
    // The other process waits while the dead lease counts: Redis names the time, and the
    // process asks again after at most a lease's ttl (a live lease is given back by then)...
    let mut waits = 0;
    loop {
        match a.charge(job(1_000)).await {
            Ok(_) => break,
            Err(LeaseWait::NotUntil(at)) => {
                let wait = at.saturating_duration_since(Instant::now());
                assert!(wait <= spans.ttl, "{wait:?}");
                waits += 1;
                assert!(waits < 100, "still waiting after {waits} waits");
                // The time the protocol named, on the clock Redis counts by: not a guess.
                tokio::time::sleep(wait).await;
            }
            other => panic!("expected a wait, got {other:?}"),
        }
    }
    // ...and then gets the room: the dead lease is gone.
    assert!(waits >= 1);
    // Every key expires by itself shortly after its longest record.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for key in k.quota() {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 1_400, "{key}: {ttl} ms");
    }
}

#[tokio::test]
async fn redis_killed_mid_run_falls_back_to_a_share_and_comes_back() {
    let mut redis = RedisServer::start().unwrap();
    let k = keys("fallback");
    let spans = LeaseSpans::new(LEASE_TTL, S);
    let mut a = Process::new(&redis, k.clone(), spans, 2);
    let (mut link, change) = RedisLink::at_start(
        Instant::now(),
        Ok(()),
        SharedFallback::Error,
        url(&redis).redacted(),
    )
    .unwrap();
    assert_eq!(change, None);
    for _ in 0..2 {
        a.charge(job(1_000)).await.unwrap();
    }

    redis.kill().unwrap();
    // The next renewal fails: the link is lost, the quota paces on its half of the limit.
    a.quota.try_charge(Instant::now(), job(9_000)).unwrap_err();
    let renewal = a.quota.next_renewal(Instant::now()).unwrap();
    let error = a
        .redis
        .renew(&k, limits(), spans, &renewal)
        .await
        .unwrap_err();
    assert_eq!(error.action, "renew");
    let change = link.failed(Instant::now(), &error.to_string());
    assert!(
        matches!(change, Some(LinkChange::Lost { .. })),
        "{change:?}"
    );
    a.quota.redis_lost(Instant::now());
    assert!(a.quota.is_local());
    // Half is 5,000 tokens a minute; this process charged 2,000 of them already.
    let mut local = 0;
    while a.quota.try_charge(Instant::now(), job(1_000)).is_ok() {
        local += 1;
    }
    assert_eq!(local, 3);
    // While Redis is away the probe fails and the next try is pushed back.
    let retry = link.retry_at().unwrap();
    assert!(a.redis.ping().await.is_err());
    assert_eq!(link.failed(Instant::now(), "refused"), None);
    assert!(link.retry_at().unwrap() > retry);

    redis.restart().unwrap();
    a.redis.ping().await.unwrap();
    assert!(matches!(
        link.succeeded(Instant::now()),
        Some(LinkChange::Restored { .. })
    ));
    let carries = a.quota.redis_back(Instant::now());
    let carried: u64 = carries.iter().map(|c| c.cost.tokens).sum();
    assert_eq!(carried, 5_000);
    a.redis.carry(&k, spans, &carries).await.unwrap();
    // The restarted Redis lost its data, but counts what the process carried back.
    let mut b = SharedRedis::new(&url(&redis)).unwrap();
    assert!(matches!(
        ask(&mut b, &k, 1, 10_000).await,
        Grant::Granted {
            cost: Cost { tokens: 5_000, .. },
            ..
        }
    ));
    // And the first process is sharing again: Redis has nothing left for it.
    assert!(!a.quota.is_local());
    assert!(matches!(
        a.charge(job(1_000)).await,
        Err(LeaseWait::NotUntil(_))
    ));
}

#[tokio::test]
async fn redis_unreachable_at_start_is_an_error_unless_fallback_is_local() {
    let mut redis = RedisServer::start().unwrap();
    let url = url(&redis);
    redis.kill().unwrap();
    let mut client = SharedRedis::new(&url).unwrap();
    let reached = client.ping().await.map_err(|e| e.to_string());
    assert!(
        reached.as_ref().unwrap_err().contains("redis connect"),
        "{reached:?}"
    );
    let error = RedisLink::at_start(
        Instant::now(),
        reached.clone(),
        SharedFallback::Error,
        url.redacted(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(&format!(
            "shared quotas: cannot reach Redis at {}",
            url.redacted()
        )),
        "{error}"
    );
    assert!(error.contains("shared.fallback: local"), "{error}");
    let (link, change) = RedisLink::at_start(
        Instant::now(),
        reached,
        SharedFallback::Local,
        url.redacted(),
    )
    .unwrap();
    assert!(!link.is_shared());
    assert!(matches!(change, Some(LinkChange::Lost { .. })));
}

#[tokio::test]
async fn health_written_by_one_process_is_read_by_the_other() {
    let redis = RedisServer::start().unwrap();
    let mut a = SharedRedis::new(&url(&redis)).unwrap();
    let mut b = SharedRedis::new(&url(&redis)).unwrap();
    let (k, other) = (keys("health"), keys("health-other"));
    assert_eq!(
        b.health(std::slice::from_ref(&k)).await.unwrap()[0],
        Default::default()
    );

    a.note(&k, &HealthNote::Cooling { wait: 800 * MS })
        .await
        .unwrap();
    // A shorter wait does not cut the longer one.
    a.note(&k, &HealthNote::Cooling { wait: 100 * MS })
        .await
        .unwrap();
    let seen = b.health(&[k.clone(), other.clone()]).await.unwrap();
    let cooling = seen[0].cooling_for.unwrap();
    assert!(cooling > 100 * MS && cooling <= 800 * MS, "{cooling:?}");
    assert_eq!(seen[1], Default::default());
    // While it cools, nobody gets a lease: the wait is the cooling's.
    match ask(&mut b, &k, 1, 1).await {
        Grant::Wait(wait) => assert!(wait > 100 * MS && wait <= 800 * MS, "{wait:?}"),
        other => panic!("expected a wait, got {other:?}"),
    }

    let disable = HealthNote::Disabled {
        reason: "404 deployment not found".into(),
        ttl: 30 * S,
    };
    a.note(&k, &disable).await.unwrap();
    let seen = b.health(std::slice::from_ref(&k)).await.unwrap();
    let (reason, left) = seen[0].disabled.clone().unwrap();
    assert_eq!(reason, "404 deployment not found");
    assert!(left > 29 * S && left <= 30 * S, "{left:?}");

    assert!(!seen[0].recovered);

    // A recovery lifts the disable and leaves its mark; a later disable supersedes it.
    a.note(&k, &HealthNote::Recovered).await.unwrap();
    let seen = b.health(std::slice::from_ref(&k)).await.unwrap();
    assert_eq!((seen[0].disabled.clone(), seen[0].recovered), (None, true));
    a.note(&k, &disable).await.unwrap();
    let seen = b.health(&[k]).await.unwrap();
    assert!(!seen[0].recovered);
    assert!(seen[0].disabled.is_some());
}

/// Sums what the records in the sets hold, the way the scripts' running totals should.
const RECOUNT: &str = r"
local t, rm, rw = 0, 0, 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tok, req = string.match(redis.call('HGET', KEYS[3], id), '^(%d+) (%d+)')
  t = t + tonumber(tok); rm = rm + tonumber(req)
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local _, req = string.match(redis.call('HGET', KEYS[3], id), '^(%d+) (%d+)')
  rw = rw + tonumber(req)
end
local kept = redis.call('HMGET', KEYS[4], 't', 'rm', 'rw')
return {t, rm, rw, tonumber(kept[1]) or 0, tonumber(kept[2]) or 0, tonumber(kept[3]) or 0}
";

#[tokio::test]
async fn the_running_totals_always_match_the_records() {
    use rand::{RngExt, SeedableRng};
    let redis = RedisServer::start().unwrap();
    let k = keys("totals");
    // Spans of a few milliseconds: records end while the test runs, with no waiting.
    let spans = LeaseSpans {
        ttl: 2 * MS,
        minute: 6 * MS,
        window: 3 * MS,
    };
    let limits = LeaseLimits {
        tokens_per_minute: Some(5_000),
        requests_per_minute: Some(50),
        requests_per_window: Some(8),
    };
    let mut client = SharedRedis::new(&url(&redis)).unwrap();
    let raw = redis::Client::open(redis.url()).unwrap();
    let mut conn = raw.get_multiplexed_async_connection().await.unwrap();
    let recount = redis::Script::new(RECOUNT);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut held: Vec<(u64, Cost, Instant)> = Vec::new();
    let (mut grants, mut waits) = (0, 0);
    for _ in 0..400 {
        let give_back = if !held.is_empty() && rng.random_bool(0.5) {
            let (id, room, at) = held.swap_remove(rng.random_range(0..held.len()));
            Some(aoai_blaster::core::shared::LeaseReturn {
                id,
                used: Cost {
                    tokens: rng.random_range(0..=room.tokens),
                    requests: rng.random_range(0..=room.requests),
                },
                last_use: at.elapsed().min(spans.ttl),
            })
        } else {
            None
        };
        let ask = rng.random_bool(0.7).then(|| LeaseAsk {
            want: Cost {
                tokens: rng.random_range(1..3_000),
                requests: rng.random_range(1..6),
            },
            at_least: Cost {
                tokens: rng.random_range(1..800),
                requests: 1,
            },
        });
        let asked = Instant::now();
        match client
            .renew(&k, limits, spans, &Renewal { give_back, ask })
            .await
            .unwrap()
        {
            Some(Grant::Granted { id, cost }) => {
                grants += 1;
                held.push((id, cost, asked));
            }
            Some(Grant::Wait(_)) => waits += 1,
            None => {}
        }
        let counted: Vec<i64> = recount
            .key(k.minute())
            .key(k.window())
            .key(k.leases())
            .key(k.totals())
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(counted[..3], counted[3..], "recounted vs kept (t, rm, rw)");
        assert!(counted[3] <= 5_000 && counted[5] <= 8, "{counted:?}");
    }
    // Both paths ran: grants, and refusals that walked the records.
    assert!(grants > 50 && waits > 10, "{grants} grants, {waits} waits");
}
