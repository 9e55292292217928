//! The fleet simulator and the chaos tooling behind `rollcall sim`, `rollcall chaos` and
//! `rollcall bench`, shared with the fault-scenario suite.

pub mod alerts;
#[cfg(feature = "simulation")]
pub mod background;
pub mod chaos;
pub mod compose;
pub mod config;
pub mod console;
pub mod desk_client;
pub mod figures;
#[cfg(feature = "simulation")]
pub mod fleet;
pub mod metrics;
pub mod results;
#[cfg(feature = "simulation")]
pub mod sim;
