//! A request that met a pooled keep-alive connection the server had already closed.
//!
//! Why this is not a transport failure: servers close idle keep-alive connections on their own
//! clock (5 s is common: actix-web, uvicorn, Node; load balancers in front of Azure have idle
//! timeouts of their own), and a request that goes out on one as it closes fails before any byte
//! of a reply. That says nothing about the deployment, yet classified as a connection failure
//! it grew the failure streak and cooled the deployment for its backoff (0.5 to 1 s), stalling
//! every request of a run with one deployment. So the endpoint resends such a request at once
//! on a fresh connection, within the same attempt: the endpoint's health and the job's retry
//! budget never see the first failure, and the attempt's quota reservation covers the resend
//! (the server charges on arrival; the first request did not arrive as a request it answered).
//!
//! The bound: one resend in a row. The resend goes out on a connection made for it, so it cannot
//! meet the same race; if it fails in any way, or a connection made for a request fails, that is
//! an ordinary transient failure with today's handling (backoff, streak, disable).
//!
//! Non-idempotency: an HTTP client cannot always tell whether the server read a request written
//! on a connection that then closed without a reply byte (an EOF after the write). We treat that
//! as the keep-alive race, the common case, because the job was resent after such a failure
//! before this rule too (as a retry, after a cooldown): the rule changes when the resend happens
//! and what the endpoint's health learns, not whether a second request goes out.
//!
//! ```
//! use aoai_blaster_core::stale::{Connection, SendFailure, StaleRetry};
//!
//! let mut retry = StaleRetry::default();
//! // The server had closed the pooled connection: resend at once on a fresh one.
//! assert!(retry.resend(Connection::Pooled, SendFailure::ClosedBeforeReply));
//! // The fresh connection fails too: an ordinary failure, no second resend.
//! assert!(!retry.resend(Connection::Fresh, SendFailure::ClosedBeforeReply));
//! assert_eq!(retry.resent(), 1);
//! ```

/// Where the connection a request went out on came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Made for this request: a failure on it is a real signal about the server or network.
    Fresh,
    /// Taken from the pool, idle since its previous exchange: the server may have closed it.
    Pooled,
}

/// How far a request that got no reply went, as the HTTP client reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFailure {
    /// Writing the request failed: the peer had closed or reset the connection.
    WriteFailed,
    /// The request was written, then the connection ended (EOF or reset) before any byte of a
    /// reply.
    ClosedBeforeReply,
    /// HTTP/2: the server said it did not process the request (a graceful GOAWAY naming an
    /// earlier stream, or REFUSED_STREAM).
    Refused,
    /// Anything else: connecting (DNS, TCP, TLS), timeouts, a reply begun and then broken.
    Other,
}

impl SendFailure {
    /// True when the failure came before any byte of a reply: the keep-alive race's signs.
    pub fn before_reply(self) -> bool {
        !matches!(self, SendFailure::Other)
    }
}

/// The keep-alive race rule for one attempt: resend once, at once, on a fresh connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaleRetry {
    resent: u32,
    /// The previous send was a resend after a stale connection (reset by any other ending).
    in_a_row: bool,
}

impl StaleRetry {
    /// After a send on `connection` that got no reply and failed as `failure`: true when the
    /// request is resent at once on a fresh connection (a pooled connection failed before any
    /// reply byte, and the previous send was not already such a resend). False means the
    /// failure is the attempt's outcome, with the ordinary handling.
    pub fn resend(&mut self, connection: Connection, failure: SendFailure) -> bool {
        let stale = connection == Connection::Pooled && failure.before_reply();
        let resend = stale && !self.in_a_row;
        self.in_a_row = resend;
        if resend {
            self.resent += 1;
        }
        resend
    }

    /// A send got a reply (any status): the next stale failure may be resent again.
    pub fn answered(&mut self) {
        self.in_a_row = false;
    }

    /// Resends made so far (for the attempt's report and the `stale_connection` counts).
    pub fn resent(&self) -> u32 {
        self.resent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE_REPLY: [SendFailure; 3] = [
        SendFailure::WriteFailed,
        SendFailure::ClosedBeforeReply,
        SendFailure::Refused,
    ];

    #[test]
    fn a_pooled_connection_failing_before_a_reply_is_resent_once() {
        for failure in BEFORE_REPLY {
            let mut retry = StaleRetry::default();
            assert!(retry.resend(Connection::Pooled, failure), "{failure:?}");
            assert_eq!(retry.resent(), 1);
        }
    }

    #[test]
    fn a_fresh_connection_failing_is_an_ordinary_failure() {
        for failure in BEFORE_REPLY.into_iter().chain([SendFailure::Other]) {
            let mut retry = StaleRetry::default();
            assert!(!retry.resend(Connection::Fresh, failure), "{failure:?}");
            assert_eq!(retry.resent(), 0);
        }
    }

    #[test]
    fn a_failure_after_or_outside_the_race_is_not_resent() {
        let mut retry = StaleRetry::default();
        assert!(!retry.resend(Connection::Pooled, SendFailure::Other));
        assert_eq!(retry.resent(), 0);
    }

    #[test]
    fn a_second_stale_failure_in_a_row_is_an_ordinary_failure() {
        let mut retry = StaleRetry::default();
        assert!(retry.resend(Connection::Pooled, SendFailure::ClosedBeforeReply));
        // Even were the resend's connection pooled, no second resend follows the first.
        assert!(!retry.resend(Connection::Pooled, SendFailure::WriteFailed));
        assert_eq!(retry.resent(), 1);
    }

    #[test]
    fn a_reply_between_two_stale_failures_allows_another_resend() {
        let mut retry = StaleRetry::default();
        assert!(retry.resend(Connection::Pooled, SendFailure::ClosedBeforeReply));
        // e.g. a 401 whose token was refreshed, then sent again on a pooled connection.
        retry.answered();
        assert!(retry.resend(Connection::Pooled, SendFailure::ClosedBeforeReply));
        assert_eq!(retry.resent(), 2);
    }

    #[test]
    fn an_ordinary_failure_ends_the_run() {
        let mut retry = StaleRetry::default();
        assert!(retry.resend(Connection::Pooled, SendFailure::ClosedBeforeReply));
        assert!(!retry.resend(Connection::Fresh, SendFailure::Other));
        assert!(retry.resend(Connection::Pooled, SendFailure::WriteFailed));
        assert_eq!(retry.resent(), 2);
    }
}
