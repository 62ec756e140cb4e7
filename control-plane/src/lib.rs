//! `sitesyncctl`, the operator's command line for sitesync.
//!
//! Modules, in the order a command flows through them:
//! - [`cli`] declares the command line with clap: global flags (`--output table|json`,
//!   `--node ADDR`) and one subcommand group per area (`catalog` and `export inspect` on
//!   local files; `status`, `sync`, `messages`, `updates`, `settings`, `policy`, `tree`,
//!   `export` and `import` on a node; `demo`, which starts a hierarchy of node processes of
//!   its own).
//! - [`commands`] runs a parsed command: one module per group, each a thin layer that calls
//!   the library crates or a node's gRPC services and hands the result to [`output`].
//! - [`client`] is how node commands reach a node: the one function that builds the
//!   connection, call deadlines, and the mapping of gRPC status codes to operator messages
//!   (an unreachable node is exit status 2).
//! - [`views`] and [`units`] shape node responses for people and scripts: JSON view types,
//!   enum names, RFC 3339 times, durations and schedules as operators type them.
//! - [`output`] renders results: tables for people and JSON for scripts on stdout, progress
//!   and errors on stderr, so `sitesyncctl … --output json | jq` always sees clean data.
//!
//! The binary (`src/main.rs`) only parses arguments, calls [`commands::run`] and turns its
//! result into an exit code.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod output;
pub mod trust;
pub mod units;
pub mod views;
