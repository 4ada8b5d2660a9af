//! The gateway's own clock and random ids: the system clock behind core's
//! injected `Clock`, and request ids from the operating system's CSPRNG.

use chatcrafter_core::Clock;

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// 32 bytes from the operating system's CSPRNG.
pub fn random_bytes() -> [u8; 32] {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random number generator failed");
    b
}

/// A random id, 16 hex characters.
pub fn request_id() -> String {
    chatcrafter_core::verify::hex_encode(&random_bytes()[..8])
}
