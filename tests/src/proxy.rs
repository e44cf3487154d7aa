//! A TCP relay on loopback that stands for one broker node in front of the real one: tests give
//! the services a list of "nodes" and take one away ([`NodeProxy::fail`]) to see them move on,
//! or hold back what the broker sends on one connection ([`NodeProxy::hold`]): the client's
//! frames still reach the broker, the broker's confirms and replies wait.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A listening relay to `upstream`; every connection it carries ends when it fails.
#[derive(Debug)]
pub struct NodeProxy {
    pub addr: SocketAddr,
    failed: CancellationToken,
    /// The connection (by its place in accept order) whose broker side waits, if any.
    held: watch::Sender<Option<usize>>,
    accepting: JoinHandle<()>,
}

impl NodeProxy {
    pub async fn start(upstream: SocketAddr) -> NodeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let failed = CancellationToken::new();
        let stop = failed.clone();
        let (held, holding) = watch::channel(None);
        let accepting = tokio::spawn(async move {
            for index in 0.. {
                let (mut client, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let (stop, holding) = (stop.clone(), holding.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.split();
                    let (mut from_server, mut to_server) = server.into_split();
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy(&mut from_client, &mut to_server) => {}
                        () = answers(&mut from_server, &mut to_client, holding, index) => {}
                    }
                });
            }
        });
        NodeProxy {
            addr,
            failed,
            held,
            accepting,
        }
    }

    /// From now on, what the broker sends on the `index`th connection the relay accepted (0 the
    /// first) waits in the relay (confirms, replies, deliveries) until [`NodeProxy::release`];
    /// what the client sends still reaches the broker, and other connections flow.
    pub fn hold(&self, index: usize) {
        self.held.send_replace(Some(index));
    }

    /// What the broker sent while held, and everything after, flows again.
    pub fn release(&self) {
        self.held.send_replace(None);
    }

    /// The node dies: its open connections drop and its port refuses new ones.
    pub async fn fail(self) {
        self.failed.cancel();
        let _ = self.accepting.await;
    }

    /// The AMQP URL of this node, with `template`'s credentials and vhost.
    pub fn url(&self, template: &str) -> String {
        let (scheme, rest) = template.split_once("://").expect("an amqp:// URL");
        let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        let at = if credentials.is_empty() { "" } else { "@" };
        format!("{scheme}://{credentials}{at}{}{path}", self.addr)
    }
}

/// Copies what the broker sends to the client of connection `index`, each read waiting while
/// that connection is held.
async fn answers(
    from_server: &mut (impl AsyncReadExt + Unpin),
    to_client: &mut (impl AsyncWriteExt + Unpin),
    mut holding: watch::Receiver<Option<usize>>,
    index: usize,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from_server.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if holding.wait_for(|held| *held != Some(index)).await.is_err() {
            return;
        }
        if to_client.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
