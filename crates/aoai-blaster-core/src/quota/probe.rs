//! [`TurnProbe`]: where a fixed minute turns, asked of a server whose remaining counts say
//! nothing (`-1`, missing or garbage `x-ratelimit-remaining-*`).
//!
//! Why: without remaining counts the `phase` module learns nothing, and a budget that keeps
//! its sliding spans on a server whose minute is fixed frees the first minute's tokens one by
//! one from 60.3 s after each charge, where the server frees all of them at its turn (in the
//! benchmark's `remaining_headers: unknown` cell: 1.037x the minimum, against 1.002x with the
//! phase known). Only a 429 says where such a minute turns, so a budget with a configured TPM
//! asks for one, once per run, with at most two 429s:
//!
//! 1. When the minute's tokens first refuse a request its request window has room for, for
//!    at least [`ASK_WHEN_WAITING`], the budget sends that request anyway. A fixed server's 429 waits until its minute turns: the
//!    turn lies between when the request left plus the wait and its reply plus the wait. A
//!    sliding server's 429 waits until our oldest charges slide out, which can be the same
//!    instant (a client that starts with the server's minute), so this only *supposes* a turn.
//!    A success says the server counted less than we did: the next refusal asks again (one
//!    request at a time), until the admitted requests exceed a twentieth of the minute.
//! 2. After the supposed turn, the first request that the sliding minute refuses (even
//!    counting only what a sliding server surely still holds, plus what step 1 showed our count
//!    runs above the server's) but that a minute turning there admits is sent: a fixed server
//!    admits it and the turn is learned (the minute's charges are then forgotten at its turns,
//!    see `phase`); a sliding server refuses it, and the budget keeps its spans for good.
//!
//! A 429 without a wait of the server's (the configured fallback stood in), one waiting more
//! than a minute, or one no longer than the request window (a request refused, not tokens)
//! ends probing. The caller asks only for a budget whose remaining counts never came and whose
//! quota no other process shares (their charges would hide ours).

use std::time::{Duration, Instant};

use crate::classify::WaitSource;

use super::phase::Turns;

/// Step 1 asks only when the minute holds the refused request at least this long (the
/// default `rate_limit_fallback`): a 429 blocks the budget and cools the endpoint until its
/// wait is over, and a fixed server's wait ends no later than our sliding minute frees room,
/// but a 429 without a wait (Azure's Responses API has sent `-1` counts and no Retry-After)
/// waits for the fallback. Asked this early, neither costs a wait we would not have had.
pub(super) const ASK_WHEN_WAITING: Duration = crate::config::DEFAULT_RATE_LIMIT_FALLBACK;

/// Requests of step 1 a server may admit, in tokens, as a share of the minute's (1 / this),
/// before the budget stops asking: our count then runs so far above the server's that one
/// request cannot tell a fixed minute from a sliding one.
const ADMITTED_SHARE: u64 = 20;

/// Where the probe stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for the minute's tokens to refuse a request.
    Waiting,
    /// Step 1: the request charged as `id` was sent over the minute's tokens.
    Asking { id: u64 },
    /// A turn is supposed at `turns`; step 2 waits for a request to confirm it with.
    Supposing { turns: Turns },
    /// Step 2: the request charged as `id` was sent, which only a minute turning at `turns`
    /// admits.
    Confirming { id: u64, turns: Turns },
    /// Learned, refuted or given up: never again.
    Over,
}

/// What the budget may send over its minute's tokens now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// Nothing.
    Nothing,
    /// One request, whose 429 tells where the minute turns (step 1).
    Turn,
    /// One request the sliding minute refuses, if a minute turning at these turns admits it
    /// (step 2).
    Confirm(Turns),
}

/// What a reply to a probe taught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lesson {
    /// Nothing (yet).
    Nothing,
    /// The minute turns at these turns.
    Learned(Turns),
    /// The server's minute does not turn where a probe could find it: keep sliding spans.
    Refuted,
}

/// The two-step probe of a fixed minute's turn. See the module docs.
#[derive(Clone, Debug)]
pub(super) struct TurnProbe {
    step: Step,
    /// Tokens (ours) of step 1's requests that the server admitted over our minute.
    admitted: u64,
}

impl TurnProbe {
    pub(super) fn new() -> Self {
        TurnProbe {
            step: Step::Waiting,
            admitted: 0,
        }
    }

    /// What may be sent over the minute's tokens now (one probe out at a time).
    pub(super) fn ask(&self) -> Ask {
        match self.step {
            Step::Waiting => Ask::Turn,
            Step::Supposing { turns } => Ask::Confirm(turns),
            Step::Asking { .. } | Step::Confirming { .. } | Step::Over => Ask::Nothing,
        }
    }

    /// Tokens (ours) of step 1's requests that the server admitted over our minute: our count
    /// runs that far above its, so a sliding server may have that much more room than our
    /// count says.
    pub(super) fn admitted(&self) -> u64 {
        self.admitted
    }

    /// Whether the request charged as `id` is a probe awaiting its reply.
    pub(super) fn out(&self, id: u64) -> bool {
        matches!(self.step, Step::Asking { id: out } | Step::Confirming { id: out, .. } if out == id)
    }

    /// The probe [`TurnProbe::ask`] allowed was charged as `id`.
    pub(super) fn sent(&mut self, id: u64) {
        self.step = match self.step {
            Step::Waiting => Step::Asking { id },
            Step::Supposing { turns } => Step::Confirming { id, turns },
            other => other,
        };
    }

    /// Probing stops for good (the remaining counts came after all, or others share the
    /// quota).
    pub(super) fn stop(&mut self) {
        self.step = Step::Over;
    }

    /// A reply came (see [`ProbeReply`]); `wait`: its 429's wait and where the wait came from
    /// (`None`: a success); `window`: the request window in force.
    pub(super) fn replied(
        &mut self,
        reply: ProbeReply,
        wait: Option<(Duration, Option<WaitSource>)>,
        window: Duration,
    ) -> Lesson {
        match (self.step, wait) {
            (Step::Asking { id }, None) if id == reply.id => {
                self.admitted = self.admitted.saturating_add(reply.tokens);
                self.step = if self.admitted.saturating_mul(ADMITTED_SHARE) > reply.tpm {
                    Step::Over
                } else {
                    Step::Waiting
                };
                Lesson::Nothing
            }
            (Step::Asking { id }, Some((wait, source))) if id == reply.id => {
                self.step = match turn_of(reply, wait, source, window) {
                    Some(turns) => Step::Supposing { turns },
                    None => Step::Over,
                };
                Lesson::Nothing
            }
            (Step::Confirming { id, turns }, wait) if id == reply.id => {
                self.step = Step::Over;
                if wait.is_none() {
                    Lesson::Learned(turns)
                } else {
                    Lesson::Refuted
                }
            }
            _ => Lesson::Nothing,
        }
    }
}

/// The reply to one request, as the probe sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ProbeReply {
    /// The request's charge.
    pub(super) id: u64,
    /// Its tokens (ours).
    pub(super) tokens: u64,
    /// The minute's limit (ours).
    pub(super) tpm: u64,
    /// When it left.
    pub(super) left: Instant,
    /// When its reply came.
    pub(super) replied: Instant,
}

/// Where a fixed minute turns, from a 429 for its tokens: the wait counted from when the
/// request left and from its reply, widened by the wait's rounding (`None`: no wait of the
/// server's, a wait longer than a minute, or one within the request window `window`).
pub(super) fn turn_of(
    reply: ProbeReply,
    wait: Duration,
    source: Option<WaitSource>,
    window: Duration,
) -> Option<Turns> {
    if wait <= window {
        return None;
    }
    turn_after_wait(reply.left, reply.replied, wait, source)
}

/// Where a fixed minute turns, from a 429 for its tokens whose request left at `left` and
/// was answered at `replied`: `wait` after the request arrived, widened by the wait's
/// rounding (`None`: no wait of the server's, or one longer than a minute). Unwidened, a
/// wait in milliseconds rounded up put a request answered within a millisecond past the
/// turn, and two such brackets missed each other: the turns were refuted for good.
pub(super) fn turn_after_wait(
    left: Instant,
    replied: Instant,
    wait: Duration,
    source: Option<WaitSource>,
) -> Option<Turns> {
    let rounding = rounding_of(source)?;
    if wait > Duration::from_secs(60) {
        return None;
    }
    let earliest = left.checked_add(wait)?.checked_sub(rounding)?;
    let latest = replied.checked_add(wait)?.checked_add(rounding)?;
    Turns::within(earliest, latest, Duration::from_secs(60))
}

/// How far a wait from `source` can be from the server's own (its rounding); `None` when the
/// server named no wait (the configured fallback stood in). A wait of unknown source reads as
/// whole seconds.
fn rounding_of(source: Option<WaitSource>) -> Option<Duration> {
    match source {
        Some(WaitSource::RetryAfterMs) => Some(Duration::from_millis(1)),
        Some(WaitSource::Fallback) => None,
        Some(WaitSource::RetryAfter | WaitSource::RetryAfterDate | WaitSource::Message) | None => {
            Some(Duration::from_secs(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn reply(id: u64, left: Instant, replied: Instant) -> ProbeReply {
        ProbeReply {
            id,
            tokens: 1_000,
            tpm: 100_000,
            left,
            replied,
        }
    }

    #[test]
    fn a_429_for_tokens_supposes_a_turn_and_a_success_confirms_it() {
        let t0 = Instant::now();
        let mut probe = TurnProbe::new();
        assert_eq!(probe.ask(), Ask::Turn);
        probe.sent(7);
        assert_eq!(
            (probe.ask(), probe.out(7), probe.out(6)),
            (Ask::Nothing, true, false)
        );
        // Another request's reply is not the probe's.
        let other = probe.replied(reply(6, t0, t0 + 5 * MS), None, S);
        assert_eq!((other, probe.ask()), (Lesson::Nothing, Ask::Nothing));
        let wait = Some((37_000 * MS, Some(WaitSource::RetryAfterMs)));
        let lesson = probe.replied(reply(7, t0, t0 + 5 * MS), wait, S);
        assert_eq!(lesson, Lesson::Nothing);
        // Between the request's leaving and its reply, 37 s on, widened by a millisecond.
        let turns = Turns::within(t0 + 36_999 * MS, t0 + 37_006 * MS, 60 * S).unwrap();
        assert_eq!(probe.ask(), Ask::Confirm(turns));
        probe.sent(9);
        assert_eq!(probe.ask(), Ask::Nothing);
        let lesson = probe.replied(reply(9, t0 + 40 * S, t0 + 41 * S), None, S);
        assert_eq!(
            (lesson, probe.ask()),
            (Lesson::Learned(turns), Ask::Nothing)
        );
    }

    #[test]
    fn a_429_to_the_confirming_request_refutes_the_turn() {
        let t0 = Instant::now();
        let mut probe = TurnProbe::new();
        probe.sent(1);
        let wait = Some((30 * S, Some(WaitSource::RetryAfter)));
        probe.replied(reply(1, t0, t0 + 5 * MS), wait, S);
        let Ask::Confirm(turns) = probe.ask() else {
            panic!("no turn supposed");
        };
        // Whole seconds: a second either side.
        assert_eq!(
            turns,
            Turns::within(t0 + 29 * S, t0 + 31_005 * MS, 60 * S).unwrap()
        );
        probe.sent(2);
        let lesson = probe.replied(reply(2, t0 + 31 * S, t0 + 31 * S), wait, S);
        assert_eq!((lesson, probe.ask()), (Lesson::Refuted, Ask::Nothing));
    }

    #[test]
    fn no_server_wait_a_short_one_or_a_long_one_ends_probing() {
        let t0 = Instant::now();
        for wait in [
            (15 * S, Some(WaitSource::Fallback)),
            (S, Some(WaitSource::RetryAfterMs)),
            (61 * S, Some(WaitSource::RetryAfterMs)),
        ] {
            let mut probe = TurnProbe::new();
            probe.sent(1);
            let lesson = probe.replied(reply(1, t0, t0 + MS), Some(wait), S);
            assert_eq!(
                (lesson, probe.ask()),
                (Lesson::Nothing, Ask::Nothing),
                "{wait:?}"
            );
        }
        // A wait just over the request window is a minute's.
        let mut probe = TurnProbe::new();
        probe.sent(1);
        let wait = Some((S + MS, Some(WaitSource::RetryAfterMs)));
        probe.replied(reply(1, t0, t0 + MS), wait, S);
        assert!(matches!(probe.ask(), Ask::Confirm(_)));
    }

    #[test]
    fn successes_ask_again_until_a_twentieth_of_the_minute_was_admitted() {
        // 1,000 tokens a probe, 100,000 a minute: the fifth success passes 5,000.
        let t0 = Instant::now();
        let mut probe = TurnProbe::new();
        for id in 0..5 {
            assert_eq!(probe.ask(), Ask::Turn, "probe {id}");
            probe.sent(id);
            probe.replied(reply(id, t0, t0 + MS), None, S);
        }
        assert_eq!(probe.admitted(), 5_000);
        assert_eq!(probe.ask(), Ask::Turn);
        probe.sent(5);
        probe.replied(reply(5, t0, t0 + MS), None, S);
        assert_eq!((probe.admitted(), probe.ask()), (6_000, Ask::Nothing));
    }

    #[test]
    fn a_stopped_probe_asks_nothing() {
        let mut probe = TurnProbe::new();
        probe.stop();
        assert_eq!(probe.ask(), Ask::Nothing);
        probe.sent(1);
        assert_eq!(probe.ask(), Ask::Nothing);
    }
}
