//! How a finished Slurm job maps onto jobscope's terminal states.
//!
//! The epilog does not always know the truth (a cancelled or timed-out job looks like a success
//! in its environment), so the mapping prefers Slurm's own state name when one is given and only
//! falls back to the exit code and signal. One table, used by the job-finished hook
//! (`api::hooks`, and `hook::event` for the epilog's own guess) and by the slurmrestd
//! reconciler (`scheduler::slurm`).

use super::JobState;

/// Slurm state names and the terminal state each one means. States not listed here (COMPLETED,
/// or anything unknown) are decided by exit code and signal.
const SLURM_STATE_TABLE: &[(&str, JobState)] = &[
    ("FAILED", JobState::Failed),
    ("NODE_FAIL", JobState::Failed),
    ("BOOT_FAIL", JobState::Failed),
    ("DEADLINE", JobState::Failed),
    ("OUT_OF_MEMORY", JobState::Failed),
    ("PREEMPTED", JobState::Failed),
    ("CANCELLED", JobState::Cancelled),
    ("TIMEOUT", JobState::Cancelled),
    ("REVOKED", JobState::Cancelled),
];

/// SIGKILL and SIGTERM: what `scancel` and the time limit send.
const CANCEL_SIGNALS: [i64; 2] = [9, 15];

/// Normalises a raw Slurm state as reported by Slurm tools: `CANCELLED by 1000` becomes
/// `CANCELLED`, `timeout` becomes `TIMEOUT`. Returns `None` for an empty string.
pub fn normalize(raw: &str) -> Option<String> {
    let word = raw.split_whitespace().next()?;
    Some(word.trim_end_matches('+').to_ascii_uppercase())
}

/// The terminal state of a finished job, from what the epilog (or slurmrestd) knows.
pub fn final_state(
    slurm_state: Option<&str>,
    exit_code: Option<i64>,
    signal: Option<i64>,
) -> JobState {
    if let Some(name) = slurm_state.and_then(normalize) {
        if let Some((_, state)) = SLURM_STATE_TABLE.iter().find(|(n, _)| *n == name) {
            return *state;
        }
    }
    match (exit_code.unwrap_or(0), signal.unwrap_or(0)) {
        (_, sig) if CANCEL_SIGNALS.contains(&sig) => JobState::Cancelled,
        (_, sig) if sig != 0 => JobState::Failed,
        (code, _) if code != 0 => JobState::Failed,
        _ => JobState::Completed,
    }
}

/// A raw wait status as `(exit code, signal)`: WEXITSTATUS and WTERMSIG.
pub fn decode_wait_status(status: u32) -> (i64, i64) {
    (i64::from((status >> 8) & 0xff), i64::from(status & 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn every_slurm_state_in_the_table_maps_as_documented() {
        let rows: &[(&str, JobState)] = &[
            ("FAILED", Failed),
            ("NODE_FAIL", Failed),
            ("BOOT_FAIL", Failed),
            ("DEADLINE", Failed),
            ("OUT_OF_MEMORY", Failed),
            ("PREEMPTED", Failed),
            ("CANCELLED", Cancelled),
            ("TIMEOUT", Cancelled),
            ("REVOKED", Cancelled),
        ];
        for (raw, want) in rows {
            // The Slurm state wins even over a clean exit code: a timed-out job's epilog sees 0.
            assert_eq!(final_state(Some(raw), Some(0), Some(0)), *want, "{raw}");
            assert_eq!(final_state(Some(raw), None, None), *want, "{raw}");
        }
    }

    #[test]
    fn completed_is_decided_by_exit_code_and_signal() {
        let rows: &[(Option<i64>, Option<i64>, JobState)] = &[
            (Some(0), Some(0), Completed),
            (None, None, Completed),
            (Some(0), Some(9), Cancelled),
            (Some(0), Some(15), Cancelled),
            (Some(1), Some(9), Cancelled),
            (Some(0), Some(11), Failed),
            (Some(0), Some(6), Failed),
            (Some(3), Some(0), Failed),
            (Some(255), None, Failed),
        ];
        for (code, sig, want) in rows {
            assert_eq!(
                final_state(Some("COMPLETED"), *code, *sig),
                *want,
                "{code:?}:{sig:?}"
            );
            assert_eq!(
                final_state(None, *code, *sig),
                *want,
                "{code:?}:{sig:?} without state"
            );
        }
    }

    #[test]
    fn raw_states_are_normalised() {
        assert_eq!(normalize("CANCELLED by 1000").as_deref(), Some("CANCELLED"));
        assert_eq!(normalize("timeout").as_deref(), Some("TIMEOUT"));
        assert_eq!(normalize("COMPLETED+").as_deref(), Some("COMPLETED"));
        assert_eq!(normalize("   "), None);
        assert_eq!(
            final_state(Some("cancelled by 0"), Some(0), Some(0)),
            Cancelled
        );
    }

    #[test]
    fn unknown_states_fall_back_to_exit_status() {
        assert_eq!(final_state(Some("SPECIAL_EXIT"), Some(2), None), Failed);
        assert_eq!(final_state(Some("RESIZING"), Some(0), None), Completed);
    }
}
