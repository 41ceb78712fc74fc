//! The state every handler shares.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use lapin::Connection;

use offload_shared::Settings;

use crate::{
    publisher::JobPublisher,
    store::{SqliteStore, writer::StoreWriter},
};

/// Shared by all handlers through `with_state`.
#[derive(Clone)]
pub struct AppState {
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Publishes accepted jobs.
    pub publisher: JobPublisher,
    /// Reads jobs.
    pub store: SqliteStore,
    /// Writes jobs.
    pub writer: StoreWriter,
    /// The broker connection, for readiness.
    pub broker: Arc<Connection>,
    /// True while lifecycle events are being consumed into the store.
    pub events_running: Arc<AtomicBool>,
}

impl AppState {
    /// What keeps the API from serving jobs, if anything.
    pub fn broker_problem(&self) -> Option<&'static str> {
        if !self.broker.status().connected() {
            Some("the broker connection is down")
        } else if !self.publisher.is_connected() {
            Some("the publishing channel is closed")
        } else if !self.events_running.load(Ordering::Relaxed) {
            Some("lifecycle events are not being consumed")
        } else {
            None
        }
    }
}
