//! Subcommands beyond `serve`.

pub mod du;
pub mod fsck;
pub mod gc;
mod remote;
