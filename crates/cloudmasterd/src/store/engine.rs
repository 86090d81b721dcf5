//! What the policy engine (crate::engine) reads and writes: a deployable's
//! snapshot in one read, and each destructive action as one transaction
//! guarded by the slot's incarnation (compare and swap), so a DPE that
//! restarts, or a master that restarts, repeats no action.

/// The engine's transactions on slots and the instances they own.
pub trait EngineStore {}
