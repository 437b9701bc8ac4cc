//! Subcommands beyond `serve`.

pub mod fsck;
pub mod gc;
