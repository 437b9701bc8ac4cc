//! Subcommands beyond `serve`.

pub mod gc;
