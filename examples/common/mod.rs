//! Code the examples share (not an example itself: no main.rs).

pub mod graph;
