//! rollcall-cluster: registration, per-subnet rings, leaders, failure and slowness detection,
//! rejoin, and the question/answer flow along a ring.
//!
//! Empty until the rings issue lands; it will depend on `rollcall-runtime` for links,
//! supervision and the transport, and keep its protocol decisions in sans-IO cores.
