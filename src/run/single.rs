//! The single-pair commands (`preflight`, `start`, `status`, `cutover`, `verify`, `cleanup`
//! of one engine's pairs, outside a run): which of them hold the migration's lease, and when a
//! sequence of pairs stops.
//!
//! Every step that changes a server holds the lease, so no run and no other command acts on
//! the same servers meanwhile; read-only steps never take it (they must work while a run
//! holds it). A cutover stops at the first pair that fails: the others are left untouched and
//! serving from their sources, rather than cut over in a state nobody planned.

use crate::engine::{DbError, Holder, Pair, ServerLease};
use crate::plan::Plan;
use crate::state::{FileStore, Lease, StateDir, StateError, Store};

/// Why a lease was not taken (nothing is held then).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A pair's servers: another process holds their lease (named), a holder from another
    /// state directory stopped without releasing it, or they could not be reached.
    #[error("{component}: {error}")]
    Servers {
        /// `postgres NAME`, `mysql NAME`.
        component: String,
        /// What the pair's engine said.
        #[source]
        error: DbError,
    },
    /// The migration's own lease in its state directory.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The migration's lease on the servers of several pairs (see [`ServerLease`]): taken pair by
/// pair before anything changes, let go together.
pub struct ServerLeases(Vec<Box<dyn ServerLease>>);

impl ServerLeases {
    /// Takes the lease on every pair's servers for `purpose`, for the migration whose state
    /// directory is `plan`'s; refused (naming the holder) with nothing changed while another
    /// process holds one, or a stopped holder from another state directory left it.
    pub async fn take<'a>(
        plan: &Plan,
        purpose: &str,
        pairs: impl IntoIterator<Item = &'a dyn Pair>,
    ) -> Result<ServerLeases, LeaseError> {
        let holder = Holder::this_process(purpose, &plan.migration.state_dir);
        let mut held = ServerLeases(Vec::new());
        for pair in pairs {
            match pair.lease(&holder).await {
                Ok(lease) => held.0.push(lease),
                Err(e) => {
                    held.release().await;
                    return Err(LeaseError::Servers {
                        component: pair.component(),
                        error: e,
                    });
                }
            }
        }
        Ok(held)
    }

    /// The lease on the servers of every database pair of `plan` (none: nothing held), for a
    /// command that changes something else the migration owns (a DNS record, a file tree):
    /// another state directory's run holds them, so the command is refused while it runs.
    pub async fn of_plan(plan: &Plan, purpose: &str) -> Result<ServerLeases, LeaseError> {
        let pairs: Vec<Box<dyn Pair>> = super::pairs::all(plan)
            .into_iter()
            .map(|(_, pair)| pair)
            .collect();
        ServerLeases::take(plan, purpose, pairs.iter().map(|p| p.as_ref())).await
    }

    /// Lets go of every lease and clears the holder records: the command ended on its own,
    /// with nothing left for a resume.
    pub async fn release(self) {
        for lease in self.0 {
            lease.release().await;
        }
    }

    /// Lets go of every lease but keeps the holder records: the command stopped with work
    /// that only its own journal can finish, so another state directory stays refused.
    pub fn keep_records(self) {
        drop(self);
    }
}

/// What a command that changes a migration's DNS records or file trees holds while it runs:
/// the migration's lease (its state directory: a run's pass or switch, or another command's,
/// is never raced), then the lease on the servers of every database pair of the plan (a run
/// from another state directory holds them while it runs).
pub struct ChangeGuard {
    _lease: crate::state::Lease,
    servers: ServerLeases,
}

impl ChangeGuard {
    /// Takes both for `purpose` (`dns update`, `files final`...); refused, naming the holder,
    /// with nothing held.
    pub async fn take(plan: &Plan, purpose: &str) -> Result<ChangeGuard, LeaseError> {
        let lease = crate::state::take_lease(&plan.migration.state_dir, purpose)?;
        let servers = ServerLeases::of_plan(plan, purpose).await?;
        Ok(ChangeGuard {
            _lease: lease,
            servers,
        })
    }

    /// Lets go of both: the command ended.
    pub async fn release(self) {
        self.servers.release().await;
    }
}

/// One step of the single-pair commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairStep {
    /// Check both servers; change nothing.
    Preflight,
    /// Set replication up.
    Start,
    /// Read replication's state.
    Status,
    /// Fence, catch up, promote.
    Cutover,
    /// Finish or undo an interrupted cutover.
    Resume {
        /// Catch up and promote instead of rolling back.
        go_on: bool,
    },
    /// Compare every table.
    Verify,
    /// Remove replication's objects.
    Cleanup,
    /// Copy some tables again.
    Resync,
}

impl PairStep {
    /// Whether the step changes a server (and so holds the lease).
    pub fn changes_servers(self) -> bool {
        !matches!(
            self,
            PairStep::Preflight | PairStep::Status | PairStep::Verify
        )
    }

    /// Whether a failed pair ends the sequence (the later pairs are not attempted).
    pub fn stops_at_first_failure(self) -> bool {
        matches!(self, PairStep::Cutover)
    }

    /// The command's word (`start`, `cutover resume`, ...).
    pub fn verb(self) -> &'static str {
        match self {
            PairStep::Preflight => "preflight",
            PairStep::Start => "start",
            PairStep::Status => "status",
            PairStep::Cutover => "cutover",
            PairStep::Resume { .. } => "cutover resume",
            PairStep::Verify => "verify",
            PairStep::Cleanup => "cleanup",
            PairStep::Resync => "resync",
        }
    }

    /// The lease for this step on `engine`'s pairs of `plan`, if the step changes servers;
    /// refused while a run or another command holds it.
    pub fn lease(self, plan: &Plan, engine: &str) -> Result<Option<Lease>, StateError> {
        if !self.changes_servers() {
            return Ok(None);
        }
        FileStore::new(&StateDir::new(&plan.migration.state_dir))
            .acquire(&format!("{engine} {}", self.verb()))
            .map(Some)
    }
}

/// Runs `step` on each of `pairs` in turn through `each`, which returns whether the pair
/// succeeded and its result; stops after the first failure where the step says so.
pub async fn each_pair<P, T, F, Fut>(step: PairStep, pairs: Vec<P>, mut each: F) -> Vec<(bool, T)>
where
    F: FnMut(P) -> Fut,
    Fut: std::future::Future<Output = (bool, T)>,
{
    let mut results = Vec::new();
    for pair in pairs {
        let (ok, value) = each(pair).await;
        results.push((ok, value));
        if !ok && step.stops_at_first_failure() {
            break;
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cutover_stops_at_the_first_failed_pair_and_a_verify_does_not() {
        let outcome = [true, false, true];
        let tried = |step| async move {
            each_pair(
                step,
                vec![0, 1, 2],
                |i: usize| async move { (outcome[i], i) },
            )
            .await
            .into_iter()
            .map(|(_, i)| i)
            .collect::<Vec<_>>()
        };
        assert_eq!(tried(PairStep::Cutover).await, [0, 1]);
        assert_eq!(tried(PairStep::Verify).await, [0, 1, 2]);
    }

    #[test]
    fn only_steps_that_change_servers_hold_the_lease() {
        for step in [PairStep::Preflight, PairStep::Status, PairStep::Verify] {
            assert!(!step.changes_servers());
        }
        for step in [
            PairStep::Start,
            PairStep::Cutover,
            PairStep::Resume { go_on: false },
            PairStep::Cleanup,
            PairStep::Resync,
        ] {
            assert!(step.changes_servers());
        }
    }
}
