//! The engine's unit tests.

mod cpe;
mod dpe;
mod ladder;
mod prop;
mod render;
mod rollout;
