//! `plg-sim`: the local demo and the harness for end-to-end tests; the loss-injecting
//! simulator grows here.

pub mod demo;
pub mod echo;
pub mod local_mesh;
pub mod traffic;
