//! The broker's nodes. `CHOREO_AMQP_URL` names one broker, or the nodes of a cluster separated by
//! commas; a connection goes to the first node that answers, trying them in turn from a given
//! one, each within a connect timeout (a frozen node accepts TCP connections and never answers).
//! An `amqps://` node is reached over TLS with the [`Tls`] the nodes were given.

use crate::{Error, Result, Secret, Tls};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, DefaultConnectionBuilder};
use std::time::Duration;

/// The broker nodes a service may connect to, in the order given.
#[derive(Clone)]
pub struct Nodes {
    urls: Vec<Secret>,
    tls: Option<Tls>,
}

impl Nodes {
    /// Splits `list` at commas. Each URL must be an AMQP URL; a malformed one is refused here,
    /// with its password redacted, so that a service does not start with it.
    pub fn parse(list: &Secret) -> Result<Self> {
        let urls: Vec<Secret> = list
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(Secret::new)
            .collect();
        if urls.is_empty() {
            return Err(Error::BadUrl {
                url: "(none)".to_owned(),
            });
        }
        for url in &urls {
            uri(url, Duration::from_secs(1))?;
        }
        Ok(Nodes { urls, tls: None })
    }

    /// The same nodes, reached over TLS with `tls` where their URL says `amqps://`.
    pub fn with_tls(self, tls: Tls) -> Self {
        Nodes {
            tls: Some(tls),
            ..self
        }
    }

    /// Whether any node is named with `amqps://`.
    pub fn any_tls(&self) -> bool {
        self.urls
            .iter()
            .any(|url| url.expose().trim_start().starts_with("amqps://"))
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The `index`th URL (modulo the count), redacted: for logs.
    pub fn redacted(&self, index: usize) -> String {
        crate::secret::redact(self.urls[index % self.urls.len()].expose())
    }

    /// A connection to node `index` (modulo the count).
    pub async fn connect_to(
        &self,
        index: usize,
        heartbeat: Duration,
        timeout: Duration,
        name: &str,
    ) -> Result<Connection> {
        let uri = uri(&self.urls[index % self.urls.len()], heartbeat)?;
        let over_tls = uri.scheme == AMQPScheme::AMQPS;
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let mut builder = DefaultConnectionBuilder::new()?
            .with_uri(uri)
            .with_properties(properties);
        if over_tls {
            // Without a `Tls`, lapin's default would trust no CA at all (no built-in roots):
            // `CommonSettings::broker` always gives one for an amqps:// URL.
            if let Some(tls) = &self.tls {
                builder = builder.with_tls_config(tls.config());
            }
        }
        match tokio::time::timeout(timeout, builder.connect()).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) if login_refused(&error) => Err(Error::LoginRefused {
                url: self.redacted(index),
                user: uri_user(&self.urls[index % self.urls.len()]),
                reason: error.to_string(),
            }),
            Ok(Err(error)) if over_tls => Err(self.tls_failure(index, error)),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(Error::ConnectTimeout {
                url: self.redacted(index),
                timeout,
            }),
        }
    }

    /// The error of a failed `amqps://` connection: a TLS failure says so and names the CA file,
    /// so that an operator knows which of the three files to look at.
    fn tls_failure(&self, index: usize, error: lapin::Error) -> Error {
        let mut reason = error.to_string();
        let lower = reason.to_ascii_lowercase();
        let tls_related = ["certificate", "tls", "alert", "handshake", "issuer"]
            .iter()
            .any(|word| lower.contains(word));
        // With TLS 1.3 the broker checks the client's certificate after the client considers the
        // handshake done: its refusal can arrive as an alert or, just as well, as a reset of the
        // connection before the first AMQP frame.
        let closed_at_once = [
            "connection reset",
            "broken pipe",
            "unexpected eof",
            "unexpectedeof",
        ]
        .iter()
        .any(|word| lower.contains(word));
        if closed_at_once {
            reason = format!(
                "the broker closed the connection during the TLS handshake ({reason}); a broker \
                 that verifies clients does this to a client certificate it does not trust"
            );
        } else if !tls_related {
            return error.into();
        }
        let ca = self.tls.as_ref().map_or_else(
            || "(none)".to_owned(),
            |tls| tls.ca_file().display().to_string(),
        );
        let client = match &self.tls {
            Some(tls) if tls.has_client_certificate() => "a client certificate",
            _ => "no client certificate",
        };
        Error::TlsHandshake {
            url: self.redacted(index),
            reason: format!(
                "{reason} (trusting the CA in {ca}, presenting {client}; check \
                 CHOREO_AMQP_TLS_CA_FILE, CHOREO_AMQP_TLS_CERT_FILE and CHOREO_AMQP_TLS_KEY_FILE)"
            ),
        }
    }

    /// A connection to the first node that answers, trying each once from `start`; returns it
    /// with the node's index. The error is the last node's.
    pub async fn connect_first(
        &self,
        start: usize,
        heartbeat: Duration,
        timeout: Duration,
        name: &str,
    ) -> Result<(Connection, usize)> {
        let mut last = None;
        for offset in 0..self.urls.len() {
            let index = (start + offset) % self.urls.len();
            match self.connect_to(index, heartbeat, timeout, name).await {
                Ok(connection) => return Ok((connection, index)),
                Err(error) => {
                    // A refused login is the supervisor's to report, once.
                    if self.urls.len() > 1 && !matches!(error, Error::LoginRefused { .. }) {
                        tracing::warn!(%error, node = %self.redacted(index), "broker node unreachable; trying the next");
                    }
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or(Error::ChannelGone))
    }
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("urls", &self.urls)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `url` with its heartbeat, parsed here rather than by lapin: lapin's parser quotes a URL it
/// rejects whole, password included, and the error would be logged at every reconnection.
/// Whether a connection failed because the broker refused its credentials or its vhost: the
/// broker answers the handshake with ACCESS_REFUSED (403).
fn login_refused(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 403)
}

/// The user name of a broker URL (RabbitMQ's default, guest, when it names none).
fn uri_user(url: &Secret) -> String {
    url.expose()
        .parse::<AMQPUri>()
        .map(|uri| uri.authority.userinfo.username)
        .unwrap_or_default()
}

fn uri(url: &Secret, heartbeat: Duration) -> Result<AMQPUri> {
    with_heartbeat(url.expose(), heartbeat)
        .parse()
        .map_err(|_| Error::BadUrl {
            url: crate::secret::redact(url.expose()),
        })
}

/// `url` with `heartbeat=<seconds>` added unless it already sets one.
fn with_heartbeat(url: &str, heartbeat: Duration) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={}", heartbeat.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_broker_url_is_refused_without_its_password() {
        for malformed in [
            "amqp:u:pw-4711@h",
            "amqp://u:pw-4711@h:port/%2f",
            "u:pw-4711@h",
            "amqp://u:p@h:5672/%2f,amqp://u:pw-4711@h:port/%2f",
            " , ",
        ] {
            let error = Nodes::parse(&Secret::new(malformed))
                .expect_err("refused")
                .to_string();
            assert!(error.contains("not a valid amqp"), "{error}");
            assert!(!error.contains("pw-4711"), "{error}");
        }
    }

    #[test]
    fn a_list_names_each_node_and_hides_every_password() {
        let nodes = Nodes::parse(&Secret::new(
            "amqp://u:pw-1@h1:5681/%2f, amqp://u:pw-2@h2:5682/%2f,",
        ))
        .expect("parses");
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes.redacted(1), "amqp://u:***@h2:5682/%2f");
        assert_eq!(nodes.redacted(2), "amqp://u:***@h1:5681/%2f");
        let shown = format!("{nodes:?}");
        assert!(!shown.contains("pw-"), "{shown}");
        assert!(
            shown.contains("h1:5681") && shown.contains("h2:5682"),
            "{shown}"
        );
    }

    #[test]
    fn the_heartbeat_is_added_to_the_url() {
        assert_eq!(
            with_heartbeat("amqp://h/%2f", Duration::from_secs(10)),
            "amqp://h/%2f?heartbeat=10"
        );
        assert_eq!(
            with_heartbeat("amqp://h/%2f?frame_max=8192", Duration::from_secs(5)),
            "amqp://h/%2f?frame_max=8192&heartbeat=5"
        );
        assert_eq!(
            with_heartbeat("amqp://h/?heartbeat=3", Duration::from_secs(5)),
            "amqp://h/?heartbeat=3"
        );
    }

    #[tokio::test]
    async fn an_unreachable_node_is_skipped_for_the_next() {
        // Port 1 on loopback refuses at once; a listener that never answers the AMQP handshake
        // stands for a frozen node and is given up after the connect timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let silent_port = silent.local_addr().expect("addr").port();
        let nodes = Nodes::parse(&Secret::new(format!(
            "amqp://u:p@127.0.0.1:1/%2f,amqp://u:p@127.0.0.1:{silent_port}/%2f"
        )))
        .expect("parses");
        let started = std::time::Instant::now();
        let error = nodes
            .connect_first(
                0,
                Duration::from_secs(5),
                Duration::from_millis(300),
                "test",
            )
            .await
            .expect_err("no node answers");
        assert!(
            matches!(error, Error::ConnectTimeout { .. }),
            "the last node's error: {error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
