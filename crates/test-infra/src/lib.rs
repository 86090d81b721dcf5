//! Helpers shared by every end-to-end test and benchmark: where the built
//! binaries and the test image are, free ports, `wait_until`, and starters
//! for the real daemons (the master, hosts, sshd, HAProxy) that clean up
//! after themselves.

pub mod haproxy;
pub mod paths;
pub mod sshd;
pub mod wait;

pub use paths::{bin, image_dir, workspace_root};
pub use wait::{free_port, wait_until};
