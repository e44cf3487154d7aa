//! [`Secret`]: a setting that holds a password (the broker URL, a database URL). It has no
//! `Display`, and its `Debug` shows the URL with the password replaced, so it cannot reach a log
//! by accident; the code that needs the real value calls [`Secret::expose`].

use serde::Deserialize;

/// A string that must not be logged as it is.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one call that needs it (a connect).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing set reads as nothing set, not as text that is no URL.
        if self.0.trim().is_empty() {
            return f.write_str("\"\"");
        }
        write!(f, "{:?}", redact(&self.0))
    }
}

/// `url` with its password replaced by `***`, and so are the values of query parameters that
/// carry a secret (`password`, `pass`, `secret`, `token`). Text that is not a URL of the form
/// `scheme://[user[:password]@]host…` keeps only its scheme: whatever the parsers reject, no
/// part of the password survives.
pub fn redact(url: &str) -> String {
    // A list of URLs (the nodes of a cluster): each part is redacted on its own, so a part that
    // is no URL keeps nothing but what looks like its scheme.
    if url.contains(',') {
        return url
            .split(',')
            .map(|part| redact_one(part.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        let scheme = url
            .split_once(':')
            .map(|(scheme, _)| scheme)
            .filter(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            })
            .unwrap_or("(not a URL)");
        return format!("{scheme}:***");
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('@') {
        Some(at) if at > scheme => {
            let credentials = &base[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &base[..scheme + 3], &base[at..])
        }
        _ => base.to_owned(),
    };
    let Some(query) = query else {
        return base;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if ["password", "pass", "secret", "token"]
                    .iter()
                    .any(|s| key.to_ascii_lowercase().contains(s)) =>
            {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_secret_reads_as_empty_and_a_url_keeps_no_password() {
        assert_eq!(format!("{:?}", Secret::new("")), "\"\"");
        assert_eq!(format!("{:?}", Secret::new("  ")), "\"\"");
        assert_eq!(
            format!("{:?}", Secret::new("postgres://u:pw-4711@h/db")),
            "\"postgres://u:***@h/db\""
        );
    }

    #[test]
    fn no_malformed_url_leaks_its_password() {
        for malformed in [
            "amqp:u:pw-4711@h",
            "amqp//u:pw-4711@h",
            "u:pw-4711@h:5672",
            "amqp://u:pw-4711@h:notaport/%2f",
            "amqp://u:pw-4711@[::1/%2f",
            "pw-4711",
            ":pw-4711",
            "sqlite:pw-4711",
            "mysql://u:pw-4711@db?password=pw-4711",
            "amqp://u:pw-4711@h1/%2f,amqp://u:pw-4711@h2/%2f",
            "amqp://u:pw-4711@h1/%2f,amqp:u:pw-4711@h2,pw-4711",
        ] {
            let redacted = redact(malformed);
            assert!(!redacted.contains("pw-4711"), "{malformed} -> {redacted}");
        }
    }

    #[test]
    fn the_password_never_reaches_a_log() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(
            redact("postgres://app@db/orders?sslmode=require&password=hunter2"),
            "postgres://app:***@db/orders?sslmode=require&password=***"
        );
        let secret = Secret::new("postgres://app:hunter2@db/orders");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "postgres://app:hunter2@db/orders");
    }
}
