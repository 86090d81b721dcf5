//! The engine's unit tests.

mod cpe;
mod debug_route;
mod dpe;
mod ladder;
mod moves;
mod prop;
mod render;
mod rollout;
