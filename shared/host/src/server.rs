//! The HTTP server: an accept loop of our own around hyper's HTTP/1 connections, because
//! `axum::serve` bounds neither how long a client may take to send a request head nor how many
//! connections are open at once, so a slow or idle client held a connection (and its memory)
//! forever.
//!
//! - **Header-read timeout**: each connection must deliver a complete request head within
//!   [`ConnectionBounds::header_timeout`] or hyper closes it. hyper starts that clock whenever it
//!   waits for a head, so it also covers a kept-alive connection that sits idle between requests
//!   (`an_idle_kept_alive_connection_is_closed_after_the_header_timeout` pins that).
//! - **Open connections**: at most [`ConnectionBounds::max_connections`]. A connection accepted
//!   over the limit is closed at once, without a byte written: the client learns immediately and
//!   can retry or go to another instance, instead of waiting in a kernel backlog it cannot see.
//!   The header timeout, the request timeout and the concurrency limit (see [`crate::http`]) make
//!   sure a slot frees up soon.
//! - **Graceful stop**: when `stop` resolves the listener is closed, idle connections are closed,
//!   and each connection with a request in flight finishes it and then closes. The caller bounds
//!   the wait (see [`crate::service`]); dropping the future drops every connection.
//!
//! Only HTTP/1 is served, as `axum::serve` did with axum's default features.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What one service's HTTP server allows each client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionBounds {
    /// How long a connection may take to send a request head, counted from when the server
    /// starts waiting for it (a new connection, or a kept-alive one after its last answer).
    pub header_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

/// Serves `router` on `listener` within `bounds` until `stop` resolves, then stops accepting
/// and returns once every open connection has finished its request in flight and closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    bounds: ConnectionBounds,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let graceful = GracefulShutdown::new();
    // The connections are owned here, so dropping this future (a shutdown past its timeout, a
    // test killing the service) closes them all.
    let mut connections = JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout);
    let service = TowerToHyperService::new(router);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            // Reaps finished connections so the set does not grow with every one ever served.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(&error).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = bounds.max_connections, "too many connections; closing");
            drop(stream);
            continue;
        };
        // Answers are small: send each at once rather than waiting to fill a segment.
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                // A client that timed out, reset or spoke garbage: its problem, not the service's.
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// An accept that failed: a connection reset before it was accepted is nothing; anything else
/// (out of file descriptors, say) is logged and retried after a pause, so the loop does not spin.
async fn pause_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting an HTTP connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    /// How long any wait of these tests may last before it fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

    /// A server of one route on a free port, stopped when the token is dropped.
    async fn start(
        bounds: ConnectionBounds,
    ) -> (std::net::SocketAddr, tokio_util::sync::DropGuard) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("bound");
        let router = Router::new().route("/hello", get(|| async { "hello" }));
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            bounds,
            stop.clone().cancelled_owned(),
        ));
        (addr, stop.drop_guard())
    }

    /// Reads until the server closes the connection: `Some(what it sent)`, or `None` if it is
    /// still open at the deadline.
    async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
        let mut received = Vec::new();
        let closed = tokio::time::timeout(DEADLINE, async {
            let mut buffer = [0u8; 1024];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        closed
            .ok()
            .map(|()| String::from_utf8_lossy(&received).into_owned())
    }

    /// Sends one request on `stream` and reads its answer (which is short and ends with the
    /// body `hello`), leaving the connection open.
    async fn ask(stream: &mut TcpStream) -> String {
        stream.write_all(REQUEST).await.expect("sends");
        let mut received = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            let mut buffer = [0u8; 1024];
            while !received.ends_with(b"hello") {
                let n = stream.read(&mut buffer).await.expect("reads");
                assert!(n > 0, "closed before answering");
                received.extend_from_slice(&buffer[..n]);
            }
        })
        .await
        .expect("answered within the deadline");
        String::from_utf8_lossy(&received).into_owned()
    }

    fn bounds(header_timeout_ms: u64, max_connections: usize) -> ConnectionBounds {
        ConnectionBounds {
            header_timeout: Duration::from_millis(header_timeout_ms),
            max_connections,
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_half_a_request_head_is_disconnected_while_others_are_served() {
        let (addr, _server) = start(bounds(300, 16)).await;
        let mut slow = TcpStream::connect(addr).await.expect("connects");
        slow.write_all(b"GET /hello HTTP/1.1\r\nHost: te")
            .await
            .expect("sends half a head");

        let mut other = TcpStream::connect(addr).await.expect("connects");
        let answer = ask(&mut other).await;
        let closed = read_until_closed(&mut slow).await;

        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            closed.is_some(),
            "the half-sent head kept its connection open past {DEADLINE:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
        let (addr, _server) = start(bounds(300, 16)).await;
        let mut idle = TcpStream::connect(addr).await.expect("connects");
        let answer = ask(&mut idle).await;

        let closed = read_until_closed(&mut idle).await;

        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(
            closed.as_deref(),
            Some(""),
            "the idle connection stayed open"
        );
    }

    #[tokio::test]
    async fn a_connection_over_the_limit_is_closed_at_once_until_an_earlier_one_closes() {
        let (addr, _server) = start(bounds(60_000, 1)).await;
        let mut first = TcpStream::connect(addr).await.expect("connects");
        // Answered, so it was accepted and holds the one slot.
        ask(&mut first).await;

        let mut second = TcpStream::connect(addr)
            .await
            .expect("the kernel accepts it");
        let refused = read_until_closed(&mut second).await;
        drop(first);
        let answered = tokio::time::timeout(DEADLINE, async {
            loop {
                let mut third = TcpStream::connect(addr).await.expect("connects");
                if third.write_all(REQUEST).await.is_ok()
                    && read_until_closed_or_answered(&mut third).await
                {
                    return;
                }
            }
        })
        .await;

        assert_eq!(
            refused.as_deref(),
            Some(""),
            "a second connection was served"
        );
        assert!(
            answered.is_ok(),
            "no connection was served after the first closed"
        );
    }

    /// Whether the server answers the request already sent on `stream` (false: it closed it).
    async fn read_until_closed_or_answered(stream: &mut TcpStream) -> bool {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if received.ends_with(b"hello") {
                return true;
            }
        }
    }

    #[tokio::test]
    async fn stopping_lets_a_request_in_flight_finish_and_closes_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("bound");
        let entered = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (arrived, held) = (entered.clone(), release.clone());
        let router = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/slow",
                get(move || async move {
                    arrived.notify_one();
                    held.notified().await;
                    "hello"
                }),
            );
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            bounds(60_000, 16),
            stop.clone().cancelled_owned(),
        ));
        let mut idle = TcpStream::connect(addr).await.expect("connects");
        ask(&mut idle).await;
        let mut busy = TcpStream::connect(addr).await.expect("connects");
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("sends");
        entered.notified().await;

        stop.cancel();
        let idle_closed = read_until_closed(&mut idle).await;
        release.notify_one();
        let answer = read_until_closed(&mut busy).await;
        let stopped = tokio::time::timeout(DEADLINE, server).await;

        assert_eq!(idle_closed.as_deref(), Some(""));
        let answer = answer.expect("the busy connection closed after its answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    }
}
