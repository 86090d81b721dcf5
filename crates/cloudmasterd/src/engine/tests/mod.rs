//! The engine's unit tests.

mod ladder;
mod prop;
