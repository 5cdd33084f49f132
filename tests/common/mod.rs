//! Helpers shared by the integration tests (`mod common;` in each tests/*.rs):
//! - `server`: throwaway valkey-servers and clusters that are ready only when they answer as
//!   themselves, retried on a new port when their bind fails;
//! - `data`: settings, keys, pages, and batch set/get helpers;
//! - `capi`: opening a handle through the C ABI;
//! - `fake`: a scripted RESP server for fault injection.
#![allow(dead_code, unused_imports)]

mod capi;
mod data;
mod server;

pub use capi::*;
pub use data::*;
pub use server::*;
pub mod fake;
