//! What `/readyz` reads of the broker side: written by the supervisor and the consumer loop,
//! read by the HTTP server.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the service is connected to the broker and consuming its queue.
#[derive(Debug, Default)]
pub struct BrokerHealth {
    connected: AtomicBool,
    consuming: AtomicBool,
}

impl BrokerHealth {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, value: bool) {
        self.connected.store(value, Ordering::Relaxed);
    }

    pub(crate) fn set_consuming(&self, value: bool) {
        self.consuming.store(value, Ordering::Relaxed);
    }
}
