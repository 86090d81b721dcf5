//! A real HAProxy on loopback with a runtime API socket, for balancer tests (issue 4).
