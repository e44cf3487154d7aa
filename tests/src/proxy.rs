//! A TCP relay on loopback that stands for one broker node in front of the real one: tests give
//! the services a list of "nodes" and take one away ([`NodeProxy::fail`]) to see them move on.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A listening relay to `upstream`; every connection it carries ends when it fails.
#[derive(Debug)]
pub struct NodeProxy {
    pub addr: SocketAddr,
    failed: CancellationToken,
    accepting: JoinHandle<()>,
}

impl NodeProxy {
    pub async fn start(upstream: SocketAddr) -> NodeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let failed = CancellationToken::new();
        let stop = failed.clone();
        let accepting = tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        NodeProxy {
            addr,
            failed,
            accepting,
        }
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
