//! The demo cluster's fixed make-up: its users, accounts and job names, its partitions and
//! their nodes (two of which do not take jobs), and the mix of job profiles it submits.

use crate::domain::NodeState;

pub(super) const USERS: &[&str] = &[
    "alice", "bob", "carol", "dmitri", "erin", "farah", "gwen", "hiro",
];
pub(super) const ACCOUNTS: &[&str] = &["physics", "chemistry", "genomics", "climate", "ml-lab"];
pub(super) const NAMES: &[&str] = &[
    "relax", "md-run", "train", "assemble", "cfd", "sweep", "bench", "align", "render",
];

/// A partition of the demo: its nodes (by number, 1-based, inclusive) and their size.
pub(super) struct PartitionSpec {
    pub(super) name: &'static str,
    pub(super) first: usize,
    pub(super) last: usize,
    pub(super) cpus: u32,
    pub(super) memory_gib: u64,
    pub(super) gpus: u32,
    pub(super) max_minutes: i64,
    /// Slurm's node features of its nodes (`Feature=` in slurm.conf).
    pub(super) features: &'static [&'static str],
}

pub(super) const PARTITIONS: &[PartitionSpec] = &[
    PartitionSpec {
        name: "cpu",
        first: 1,
        last: 28,
        cpus: 64,
        memory_gib: 256,
        gpus: 0,
        max_minutes: 2880,
        features: &["icelake", "avx512", "ib"],
    },
    PartitionSpec {
        name: "gpu",
        first: 29,
        last: 40,
        cpus: 32,
        memory_gib: 512,
        gpus: 4,
        max_minutes: 1440,
        features: &["milan", "a100", "nvlink", "ib"],
    },
    PartitionSpec {
        name: "bigmem",
        first: 41,
        last: 44,
        cpus: 128,
        memory_gib: 2048,
        gpus: 0,
        max_minutes: 2880,
        features: &["icelake", "avx512", "bigmem", "ib"],
    },
    PartitionSpec {
        name: "debug",
        first: 45,
        last: 50,
        cpus: 16,
        memory_gib: 64,
        gpus: 0,
        max_minutes: 30,
        features: &["skylake"],
    },
];

/// A partition the demo lists but never schedules: an interactive partition over the debug
/// nodes, switched off (`inactive`) as a site does during maintenance, so that the partition
/// state panels and alerts have something to show.
pub(super) const INACTIVE_PARTITION: PartitionSpec = PartitionSpec {
    name: "interactive",
    first: 45,
    last: 50,
    cpus: 16,
    memory_gib: 64,
    gpus: 0,
    max_minutes: 240,
    features: &["skylake"],
};

/// (node number, state, reason): the nodes that do not take jobs.
pub(super) const UNAVAILABLE: &[(usize, NodeState, &str)] = &[
    (17, NodeState::Drained, "bad DIMM, awaiting replacement"),
    (33, NodeState::Down, "Not responding"),
];

/// What a job does while it runs, and how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Efficient,
    Wasteful,
    IdleGpu,
    OutOfMemory,
    Timeout,
    Cancelled,
    Failed,
    Array,
    MultiNode,
}

/// (profile, weight)
pub(super) const MIX: &[(Profile, u64)] = &[
    (Profile::Efficient, 26),
    (Profile::Wasteful, 12),
    (Profile::IdleGpu, 8),
    (Profile::OutOfMemory, 6),
    (Profile::Timeout, 6),
    (Profile::Cancelled, 6),
    (Profile::Failed, 6),
    (Profile::Array, 10),
    (Profile::MultiNode, 20),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_fifty_nodes_once() {
        let mut numbers: Vec<usize> = PARTITIONS.iter().flat_map(|p| p.first..=p.last).collect();
        assert_eq!(numbers.len(), 50);
        numbers.dedup();
        assert_eq!(numbers.len(), 50);
        for (n, _, _) in UNAVAILABLE {
            assert!(numbers.contains(n));
        }
    }

    #[test]
    fn the_mix_has_every_profile() {
        for p in [
            Profile::Efficient,
            Profile::Wasteful,
            Profile::IdleGpu,
            Profile::OutOfMemory,
            Profile::Timeout,
            Profile::Cancelled,
            Profile::Failed,
            Profile::Array,
            Profile::MultiNode,
        ] {
            assert!(MIX.iter().any(|(q, w)| *q == p && *w > 0), "{p:?}");
        }
    }
}
