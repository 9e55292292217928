//! rollcall-actors: the domain — the question language and (coming next) sensors, the
//! endpoint's and server's question actors, actions, history and stores.

pub mod action;
pub mod case;
pub mod config;
pub mod desk;
pub mod endpoint;
pub mod export;
pub mod history;
pub mod ioc;
pub mod question;
pub mod search;
pub mod sensors;
pub mod store;
