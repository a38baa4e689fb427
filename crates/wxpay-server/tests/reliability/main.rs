//! The reliability and security suite (issue 6): lost, repeated and shuffled notifications,
//! crashes, many instances, forgery and replay, bad input, upstream faults, secrets, abuse, and
//! going live (metrics labels, slow headers, a stop under half-sent requests, proxies).
//!
//! The long scenarios are `#[ignore]`d so that `cargo test --workspace` stays fast; run them all
//! with `./scripts/test-reliability` (which builds the `wxpay` binary the crash and
//! many-instance scenarios start as child processes). Each scenario prints one `FIGURES` line;
//! `docs/RELIABILITY.md` holds those of the last run.

#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../api/helpers.rs"]
mod helpers;

mod abuse;
mod bad_input;
mod crash;
mod forgery;
mod harness;
mod instances;
mod live;
mod lost_notifications;
mod revocation;
mod secrets;
mod transfers;
mod upstream;
