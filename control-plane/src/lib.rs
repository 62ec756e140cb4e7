//! `sitesyncctl`, the operator's command line for sitesync.
//!
//! Modules, in the order a command flows through them:
//! - [`cli`] declares the command line with clap: global flags (`--output table|json`) and
//!   one subcommand group per area (`catalog` today; `status`, `sync`, `tree`, `demo`,
//!   `pki`… join it as their issues land).
//! - [`commands`] runs a parsed command: one module per group, each a thin layer that calls
//!   the library crates (`sitesync-metadata` now, the node's gRPC services later) and hands
//!   the result to [`output`].
//! - [`output`] renders results: tables for people and JSON for scripts on stdout, progress
//!   and errors on stderr, so `sitesyncctl … --output json | jq` always sees clean data.
//!
//! The binary (`src/main.rs`) only parses arguments, calls [`commands::run`] and turns its
//! result into an exit code.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod output;
