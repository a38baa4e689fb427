//! The server through its public HTTP API, on SQLite and PostgreSQL, against the in-process
//! simulator.

mod admin;
mod config;
mod console;
mod fulfilment;
mod helpers;
mod jobs;
mod live;
mod login;
mod notifications;
mod orders;
mod partner;
mod push;
mod reconciliation;
mod refunds;
mod schema;
mod sessions;
mod sim_proxy;
mod store;
mod tenancy;
mod tenants;
mod transfers;
mod webhooks;
mod wxacode;
