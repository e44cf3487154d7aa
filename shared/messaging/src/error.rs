//! Errors of the messaging runtime. Every variant ends the current broker session; the
//! [`crate::Broker`] supervisor reconnects after a backoff, so none of them is fatal to the process.

/// Errors of the messaging runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker refused or dropped a connection, a channel or a declaration.
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker negatively acknowledged a publish: it did not take responsibility for it.
    #[error("the broker nacked a publish to {exchange} with key {routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    /// A mandatory publish reached no queue and came back (a missing alternate exchange).
    #[error("a publish to {exchange} with key {routing_key} was unroutable and returned")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    /// The broker did not confirm a publish in time.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    /// The channel was not in confirm mode, so the publish is unconfirmed.
    #[error("a publish was not confirmed: the channel is not in confirm mode")]
    NotConfirmed,
    /// An ack or nack could not be sent because its channel is gone.
    #[error("the delivery's channel is closed; the broker will redeliver it")]
    ChannelGone,
    /// `CHOREO_AMQP_URL` holds something that is not an AMQP URL (shown with its password redacted).
    #[error("the broker URL {url} is not a valid amqp:// or amqps:// URL")]
    BadUrl { url: String },
    /// The broker refused the login: a wrong user name or password, or a user that may not use
    /// the vhost. Retrying will not help until someone changes the settings or the broker's users.
    #[error(
        "the broker at {url} refused the login of user {user:?} ({reason}): check the user name \
         and password of the broker URL (CHOREO_AMQP_URL; with `make up`, run/broker/passwords or \
         BROKER_USERS=guest) and that this user may use the vhost"
    )]
    LoginRefused {
        url: String,
        user: String,
        reason: String,
    },
    /// A broker node did not complete the AMQP handshake in time (a frozen or overloaded node).
    #[error("the broker at {url} did not answer within {timeout:?}")]
    ConnectTimeout {
        url: String,
        timeout: std::time::Duration,
    },
    /// The TLS files of the settings are missing or hold no certificate or key (start-up only).
    #[error("TLS: {reason}")]
    Tls { reason: String },
    /// An `amqps://` connection failed its TLS handshake: the broker's certificate is not signed
    /// by the configured CA, or the broker refused the client's certificate.
    #[error("TLS handshake with {url} failed: {reason}")]
    TlsHandshake { url: String, reason: String },
    /// `dlq purge --export` could not write its file: nothing was deleted.
    #[error("exporting the dead letters failed, none was deleted: {0}")]
    Export(std::io::Error),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] choreo_store::Error),
}

/// Result of the messaging runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;
