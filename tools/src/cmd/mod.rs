//! One module per command group; `main` only dispatches.

pub(crate) mod actions;
pub(crate) mod args;
pub(crate) mod ca;
pub(crate) mod cases;
pub(crate) mod chaos;
pub(crate) mod demo;
pub(crate) mod export;
pub(crate) mod nodes;
pub(crate) mod questions;
pub(crate) mod rings;
