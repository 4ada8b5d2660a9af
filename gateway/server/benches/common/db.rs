//! The store the benches share: a [`Db`] over a backend with fixed test
//! keys and the system clock.

use std::sync::Arc;

use chatcrafter_core::db::Db;
use chatcrafter_core::identity::Rules;
use chatcrafter_core::seal::Keyring;
use chatcrafter_gateway::store::AnyBackend;

pub(crate) fn graph(backend: AnyBackend) -> Db<Arc<AnyBackend>> {
    let keys = Keyring::new(
        Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="),
        Some("AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="),
    )
    .unwrap();
    Db::new(
        Arc::new(backend),
        Arc::new(chatcrafter_gateway::ids::SystemClock),
        Arc::new(keys),
        "cc:",
        Rules::default(),
        Arc::new(ring::rand::SystemRandom::new()),
    )
}
