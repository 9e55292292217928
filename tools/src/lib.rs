//! The fleet simulator and the chaos tooling behind `rollcall sim`, `rollcall chaos` and
//! `rollcall bench`, shared with the fault-scenario suite.

pub mod chaos;
pub mod compose;
pub mod desk_client;
pub mod fleet;
pub mod results;
pub mod sim;
