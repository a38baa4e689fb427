//! The HTTP API.

pub mod admin;
pub mod extract;
pub mod metrics;
pub mod mini;
pub mod notify;
pub mod openapi;
pub mod payouts;
pub mod push;
pub mod rate_limit;
pub mod sim_proxy;
pub mod tenants;
