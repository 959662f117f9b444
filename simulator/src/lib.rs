//! `plg-sim`: the local demo and the harness for end-to-end tests; the loss-injecting
//! simulator grows here.

pub mod bench;
pub mod claims;
pub mod client;
pub mod demo;
pub mod echo;
pub mod geo;
pub mod link;
pub mod link_cmd;
pub mod local_mesh;
pub mod plot;
pub mod report;
pub mod routes;
pub mod runner;
pub mod scenario;
pub mod site;
pub mod stats;
pub mod tick;
pub mod topology;
pub mod trace;
pub mod traffic;
pub mod virtual_net;
pub mod vrun;
