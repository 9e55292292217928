//! rollcall-actors: the domain actors — endpoint agent, sensors, the question language,
//! actions, history and the server's stores.
//!
//! Empty until the questions issue lands.
