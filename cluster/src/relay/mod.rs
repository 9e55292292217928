//! One relay for every payload that travels a ring: down the chain (forward first), a result
//! merged on the way back, gaps walked by the server, late machines caught up until expiry.
//! The logic lives here in sans-IO cores that take `now` and return what to do; the member
//! and the shard drive them with links and timers, and the payload plugs in through
//! [`Merged`]. The ring never looks inside the payload.

pub mod round;
pub mod walk;

pub use round::{Finished, Forward, Joined, Merged, Round};
pub use walk::{ChainWalk, Outcome, Step, asking_order};

#[cfg(feature = "hostile")]
pub mod tamper;
