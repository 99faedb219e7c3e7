//! Noticing that a client went away while its request waits.
//!
//! actix-web does not promise to drop a handler's future when the client disconnects while the
//! handler produces nothing (actix-web issue 1313): a request waiting for quota would keep its
//! job. So each connection keeps a duplicate of its socket, and a waiting request peeks at it
//! now and then: end of stream or an error means the client is gone, and the request's future,
//! with its job if no attempt of it was sent, is dropped. (A client that shut down only its
//! sending side after the request would be taken for gone too; HTTP clients do not do that.)

use std::any::Any;
use std::future::Future;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;

/// How often a waiting request looks at its connection.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// A duplicate of a connection's socket, only ever peeked at.
#[derive(Clone)]
pub(crate) struct PeerSocket(Arc<std::net::TcpStream>);

impl PeerSocket {
    /// True once the client closed or reset the connection. The socket is non-blocking (tokio
    /// made it so; a duplicate shares the flag), so this never waits.
    fn gone(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.0.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        }
    }
}

/// `HttpServer::on_connect`: keeps a duplicate of each TCP connection's socket.
pub(crate) fn remember_socket(connection: &dyn Any, data: &mut Extensions) {
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
        data.insert(PeerSocket(Arc::new(std::net::TcpStream::from(fd))));
    }
}

/// The connection's socket, if it is a TCP one.
pub(crate) fn peer(request: &HttpRequest) -> Option<PeerSocket> {
    request.conn_data::<PeerSocket>().cloned()
}

/// `work`'s output, or `None` when the client left first (then `work` is dropped).
pub(crate) async fn unless_gone<F: Future>(
    peer: Option<&PeerSocket>,
    work: F,
) -> Option<F::Output> {
    let Some(peer) = peer else {
        return Some(work.await);
    };
    let mut work = std::pin::pin!(work);
    let start = tokio::time::Instant::now() + CHECK_EVERY;
    let mut checks = tokio::time::interval_at(start, CHECK_EVERY);
    loop {
        tokio::select! {
            biased;
            output = &mut work => return Some(output),
            _ = checks.tick() => {
                if peer.gone() {
                    return None;
                }
            }
        }
    }
}
