//! Types of the ownership registry (tenancy): which tenant owns which agent
//! resource (thread or memory). The registry only records owners; the policy
//! that decides who may use a resource lives in `crate::tenancy`.
//!
//! Resource ids are the agent's ids, already percent-decoded, compared byte
//! for byte; owners are tenant keys (a user id or a claim value). Both are
//! arbitrary strings, so implementations must not give any byte a meaning.

use serde::{Deserialize, Serialize};

/// The kind of agent resource an owner is recorded for. Threads and memories
/// have separate id spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A conversation thread (checkpointer, graph runs).
    Thread,
    /// A memory in the agent's store.
    Memory,
}

impl ResourceKind {
    /// The stable lower-case name, used in storage keys.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Thread => "thread",
            ResourceKind::Memory => "memory",
        }
    }

    /// The kind named by [`as_str`](Self::as_str), if any.
    pub fn parse(name: &str) -> Option<ResourceKind> {
        [ResourceKind::Thread, ResourceKind::Memory]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A recorded owner of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The owner's tenant key.
    pub owner: String,
    /// When the owner claimed it (unix seconds).
    pub claimed_at: u64,
}

/// What [`Store::claim_resource`](super::Store::claim_resource) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The resource's owner after the call: the claimant if the claim was
    /// recorded, the earlier owner otherwise.
    pub ownership: Ownership,
    /// Whether this call recorded the owner (false: someone owned it already).
    pub claimed: bool,
}
