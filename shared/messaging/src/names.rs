//! Broker names with the configurable prefix applied, so tests and tenants can share one vhost.

/// Applies the configured prefix to every exchange and queue name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Names {
            prefix: prefix.into(),
        }
    }

    /// `name` with the prefix in front.
    pub fn of(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
