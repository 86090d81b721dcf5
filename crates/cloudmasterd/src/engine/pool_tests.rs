use super::*;

#[test]
fn a_drain_ends_with_its_last_session_or_at_its_deadline() {
    assert!(drained(Some(0), 1_000, 1_001));
    assert!(drained(None, 1_000, 1_001), "gone from the balancer");
    assert!(!drained(Some(2), 1_000, 1_000 + DRAIN_DEADLINE - 1));
    assert!(drained(Some(2), 1_000, 1_000 + DRAIN_DEADLINE));
}
