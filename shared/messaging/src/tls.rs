//! TLS for `amqps://` URLs: the CA that signs the broker's certificate and, when the broker asks
//! for one, the client's certificate and key, read from files once at start-up.
//!
//! rustls here has no built-in root store (see the workspace `Cargo.toml`): an `amqps://`
//! connection trusts exactly the CA file it is given, so a broker certificate signed by anyone
//! else, a public CA included, is refused. Without a CA file the system's bundle is read instead.

use crate::{Error, Result};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use std::path::{Path, PathBuf};

/// Where the system keeps its trusted CAs (Debian and Ubuntu, then Fedora and RHEL), read when
/// no CA file is set.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The TLS files of the settings; an empty path is "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the CA certificate(s) that sign the broker's certificate.
    pub ca_file: String,
    /// PEM: the client's certificate (its chain may follow), for brokers that verify clients.
    pub cert_file: String,
    /// PEM: the client's private key (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key_file: String,
}

/// What an `amqps://` connection is made with: the trusted CAs and the client's identity.
#[derive(Clone)]
pub struct Tls {
    config: OwnedTLSConfig,
    /// The CA file actually read, for the error message of a failed handshake.
    ca: PathBuf,
}

impl Tls {
    /// Reads the files. A file that is missing, unreadable or holds no PEM certificate (or key)
    /// is refused here, naming the setting, so a service does not start with it.
    pub fn load(files: &TlsFiles) -> Result<Self> {
        let ca = if files.ca_file.trim().is_empty() {
            SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
                .ok_or_else(|| {
                    tls_error(format!(
                        "CHOREO_AMQP_TLS_CA_FILE is not set and no system CA bundle was found \
                         (looked for {}): set it to the CA that signs the broker's certificate",
                        SYSTEM_BUNDLES.join(", ")
                    ))
                })?
        } else {
            PathBuf::from(files.ca_file.trim())
        };
        let ca_pem = read_pem(&ca, "CHOREO_AMQP_TLS_CA_FILE", "CERTIFICATE")?;
        let identity = match (files.cert_file.trim(), files.key_file.trim()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                return Err(tls_error(
                    "CHOREO_AMQP_TLS_CERT_FILE and CHOREO_AMQP_TLS_KEY_FILE go together: set both \
                     or neither"
                        .to_owned(),
                ));
            }
            (cert, key) => Some(OwnedIdentity::PKCS8 {
                pem: read_pem(Path::new(cert), "CHOREO_AMQP_TLS_CERT_FILE", "CERTIFICATE")?
                    .into_bytes(),
                key: read_pem(Path::new(key), "CHOREO_AMQP_TLS_KEY_FILE", "PRIVATE KEY")?
                    .into_bytes(),
            }),
        };
        Ok(Tls {
            config: OwnedTLSConfig {
                identity,
                cert_chain: Some(ca_pem),
            },
            ca,
        })
    }

    pub(crate) fn config(&self) -> OwnedTLSConfig {
        self.config.clone()
    }

    /// Whether a client certificate is presented.
    pub fn has_client_certificate(&self) -> bool {
        self.config.identity.is_some()
    }

    /// The CA file in use.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Tls")
            .field("ca", &self.ca)
            .field("client_certificate", &self.has_client_certificate())
            .finish()
    }
}

fn tls_error(reason: String) -> Error {
    Error::Tls { reason }
}

/// The text of the PEM file `path`, which must hold at least one block whose label ends with
/// `label` (`CERTIFICATE`; `PRIVATE KEY` also matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(path: &Path, setting: &str, label: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        tls_error(format!(
            "{setting}: cannot read {}: {error}",
            path.display()
        ))
    })?;
    let found = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if !found {
        return Err(tls_error(format!(
            "{setting}: {} holds no PEM {label}",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("writes");
        path.display().to_string()
    }

    #[test]
    fn missing_or_wrong_files_are_refused_naming_the_setting() {
        let dir = std::env::temp_dir().join(format!("choreo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let ca = file(&dir, "ca.pem", cert);
        let refused = |files: TlsFiles| Tls::load(&files).expect_err("refused").to_string();

        let message = refused(TlsFiles {
            ca_file: dir.join("nope.pem").display().to_string(),
            ..TlsFiles::default()
        });
        assert!(
            message.contains("CHOREO_AMQP_TLS_CA_FILE: cannot read"),
            "{message}"
        );
        let message = refused(TlsFiles {
            ca_file: file(&dir, "key-as-ca.pem", key),
            ..TlsFiles::default()
        });
        assert!(message.contains("holds no PEM CERTIFICATE"), "{message}");
        let message = refused(TlsFiles {
            ca_file: ca.clone(),
            cert_file: ca.clone(),
            ..TlsFiles::default()
        });
        assert!(message.contains("go together"), "{message}");
        let message = refused(TlsFiles {
            ca_file: ca.clone(),
            cert_file: ca.clone(),
            key_file: ca.clone(),
        });
        assert!(message.contains("CHOREO_AMQP_TLS_KEY_FILE"), "{message}");

        let tls = Tls::load(&TlsFiles {
            ca_file: ca.clone(),
            cert_file: ca,
            key_file: file(&dir, "key.pem", &key.replace("PRIVATE", "EC PRIVATE")),
        })
        .expect("loads");
        assert!(tls.has_client_certificate());
        assert!(!format!("{tls:?}").contains("AAAA"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
