//! The endpoint's HTTP clients, and what a send that got no reply tells: whether its connection
//! was made for it or taken from the pool, and how far it went. `aoai_blaster_core::stale`
//! decides what follows (a pooled connection the server had closed: resend at once on a
//! fresh one).
//!
//! Which connection a send used: awc does not say, so the client's TCP connector is wrapped
//! ([`CountDials`]) to count each dial into a task-local counter that [`track`] sets around one
//! send. awc's pool dials inside the send's own future (no task of its own), so a send that
//! ends with no dial counted went out on a pooled connection.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_service::Service;
use actix_tls::connect::{ConnectInfo, Connector as TcpConnector, Resolver};
use actix_web::error::ParseError;
use aoai_blaster_core::stale::{Connection, SendFailure};
use awc::error::{ConnectError, SendRequestError};
use awc::http::Uri;

use super::EndpointSettings;

/// How long an idle pooled connection may be reused (awc's default is 15 s). Servers close
/// idle keep-alive connections on their own clock (5 s is common: actix-web, uvicorn,
/// Node); dropping connections before 5 s of idleness avoids most races with that close, for
/// the price of one new connection after a pause. A request that still meets one (the server
/// closes it as the request arrives) is resent on a fresh connection (`core::stale`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

tokio::task_local! {
    /// Connections dialled while the send [`track`] runs is polled.
    static DIALS: Cell<u32>;
}

/// The endpoint's clients: the pooled one every request uses, and, made on first need, one
/// whose every connection is made for its request and closed after it (for resends after a
/// stale pooled connection). awc's client is not `Send`: these live on the actor's thread.
#[derive(Clone)]
pub(super) struct Clients {
    pooled: awc::Client,
    fresh: Rc<OnceCell<awc::Client>>,
}

impl Clients {
    pub(super) fn new(settings: &EndpointSettings) -> Self {
        Clients {
            pooled: build_client(settings, POOL_IDLE_TIMEOUT),
            fresh: Rc::default(),
        }
    }

    /// The client that sends on `connection`: the pool's, or the one that dials for each
    /// request (the caller asks the server to close each of its connections, and its pool
    /// reuses none: any idle time is over its zero keep-alive).
    pub(super) fn get(&self, connection: Connection, settings: &EndpointSettings) -> &awc::Client {
        match connection {
            Connection::Pooled => &self.pooled,
            Connection::Fresh => self
                .fresh
                .get_or_init(|| build_client(settings, Duration::ZERO)),
        }
    }
}

fn build_client(settings: &EndpointSettings, keep_alive: Duration) -> awc::Client {
    // awc builds a rustls config for every client, even a plain-http one: replaced by ours
    // (its CAs, ALPN http/1.1), which the dial counter sits under (TCP, then TLS on top).
    crate::tls::install_crypto_provider();
    let dialer = CountDials {
        inner: TcpConnector::new(Resolver::default()).service(),
    };
    let connector = awc::Connector::new()
        .connector(dialer)
        .rustls_0_23(Arc::clone(&settings.tls))
        .timeout(settings.timeouts.connect)
        .handshake_timeout(settings.timeouts.connect)
        .limit(settings.max_connections)
        .conn_keep_alive(keep_alive);
    awc::Client::builder()
        .connector(connector)
        .timeout(settings.timeouts.request)
        .disable_redirects()
        .finish()
}

/// awc's TCP connector, counting each dial into [`DIALS`] when a [`track`]ed send runs.
#[derive(Clone)]
struct CountDials<S> {
    inner: S,
}

impl<S> Service<ConnectInfo<Uri>> for CountDials<S>
where
    S: Service<ConnectInfo<Uri>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    actix_service::forward_ready!(inner);

    fn call(&self, request: ConnectInfo<Uri>) -> Self::Future {
        // Outside a tracked send (none today) there is nothing to count into.
        let _ = DIALS.try_with(|dials| dials.set(dials.get() + 1));
        self.inner.call(request)
    }
}

/// Runs `send` and tells whether it dialled a connection or took one from the pool.
pub(super) async fn track<F: Future>(send: F) -> (F::Output, Connection) {
    DIALS
        .scope(Cell::new(0), async {
            let output = send.await;
            let connection = match DIALS.with(Cell::get) {
                0 => Connection::Pooled,
                _ => Connection::Fresh,
            };
            (output, connection)
        })
        .await
}

/// How far a request went that awc failed before its reply's head (see [`SendFailure`]):
/// - `Send`: writing the request failed (EPIPE, reset): [`SendFailure::WriteFailed`];
/// - `Connect(Disconnected)` after the write: awc read EOF with nothing buffered, so not one
///   byte of a reply came: [`SendFailure::ClosedBeforeReply`];
/// - `Response(Io)` with a reset, abort, broken pipe or unexpected EOF (TLS without
///   `close_notify`): the connection ended while the head was awaited, the same race;
/// - HTTP/2, a graceful GOAWAY (`NO_ERROR`: h2 fails only the streams above the server's last
///   processed one) or REFUSED_STREAM: [`SendFailure::Refused`];
/// - anything else (connecting, timeouts, a malformed head): [`SendFailure::Other`].
pub(super) fn send_failure(error: &SendRequestError) -> SendFailure {
    use std::io::ErrorKind;
    match error {
        SendRequestError::Send(_) => SendFailure::WriteFailed,
        SendRequestError::Connect(ConnectError::Disconnected) => SendFailure::ClosedBeforeReply,
        SendRequestError::Response(ParseError::Io(io))
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            ) =>
        {
            SendFailure::ClosedBeforeReply
        }
        SendRequestError::H2(error) if refused(error) => SendFailure::Refused,
        _ => SendFailure::Other,
    }
}

/// The server said it did not process the stream (RFC 9113, 6.8 and 8.7).
fn refused(error: &h2::Error) -> bool {
    let graceful_goaway =
        error.is_go_away() && error.is_remote() && error.reason() == Some(h2::Reason::NO_ERROR);
    graceful_goaway || error.reason() == Some(h2::Reason::REFUSED_STREAM)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn io_error(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "test")
    }

    #[test]
    fn awc_errors_before_a_reply_byte_are_the_race() {
        let cases = [
            (
                SendRequestError::Send(io_error(io::ErrorKind::BrokenPipe)),
                SendFailure::WriteFailed,
            ),
            (
                SendRequestError::Connect(ConnectError::Disconnected),
                SendFailure::ClosedBeforeReply,
            ),
            (
                SendRequestError::Response(ParseError::Io(io_error(
                    io::ErrorKind::ConnectionReset,
                ))),
                SendFailure::ClosedBeforeReply,
            ),
            (
                SendRequestError::Response(ParseError::Io(io_error(io::ErrorKind::UnexpectedEof))),
                SendFailure::ClosedBeforeReply,
            ),
            (
                SendRequestError::H2(h2::Error::from(h2::Reason::REFUSED_STREAM)),
                SendFailure::Refused,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(send_failure(&error), expected, "{error}");
        }
    }

    #[test]
    fn other_awc_errors_are_not() {
        let cases = [
            SendRequestError::Timeout,
            SendRequestError::Connect(ConnectError::Timeout),
            SendRequestError::Connect(ConnectError::Io(io_error(io::ErrorKind::ConnectionRefused))),
            SendRequestError::Connect(ConnectError::NoRecords),
            // Bytes of a head then EOF: awc's decoder says "bytes remaining on stream".
            SendRequestError::Response(ParseError::Io(io_error(io::ErrorKind::Other))),
            SendRequestError::Response(ParseError::Header),
            SendRequestError::H2(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
        ];
        for error in cases {
            assert_eq!(send_failure(&error), SendFailure::Other, "{error}");
        }
    }
}
