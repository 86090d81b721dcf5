//! A real sshd on a loopback port, for fleet tests (issue 4).
