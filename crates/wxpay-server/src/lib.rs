//! wxpay-server: the merchant payment server behind a WeChat mini program.
//!
//! A library ([`Application::build`], [`router`]) started by `wxpay serve`. It serves the mini
//! program (login, orders priced from the catalog, `wx.requestPayment` parameters), receives
//! WeChat Pay's v2 and v3 notifications and applies each exactly once, and keeps its state in
//! SQLite (default) or PostgreSQL. Sandbox mode (the simulator in process) is composed by the
//! `wxpay` binary, which hands the server a [`app::Sandbox`]: this crate does not depend on the
//! simulator.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod core;
pub mod error;
pub mod jobs;
pub mod merchant;
pub mod metrics;
pub mod net;
pub mod registry;
pub mod sealing;
pub mod store;
pub mod wechat;

pub use app::{AppState, Application, Sandbox, StartError, router};
pub use config::{ConfigError, Settings};
