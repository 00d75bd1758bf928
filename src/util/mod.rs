//! Leaf helpers: nothing here imports from `crate::`, so every module may use them.

pub mod cron;
