//! Which migration owns a target tree: a small file beside it on the target host.
//!
//! Every pass copies with `--delete`, so a pass onto a tree that is already the live side of a
//! service (a migration that completed, run again from its plan, or from another state
//! directory or machine) replaces the live data with the old source's. The databases refuse
//! that by themselves (a target with rows); a tree cannot tell. So the target host keeps the
//! answer beside the tree (never inside it: the copy would delete or carry it):
//! `<parent>/.<name>.cutover-claim.json`, saying which migration (name, state directory and the
//! host that runs it) is moving a tree onto it, or that the tree has been the live side since a
//! run completed. A pass refuses a tree that is live, or that another migration is moving; the
//! operator removes the file to say the tree may be replaced.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::remote::on_host;
use super::{Entry, FilesError, tail};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClaimState {
    /// A migration's passes are copying onto the tree.
    Migrating,
    /// A run completed: the tree is the live side of the service.
    Live,
}

/// The claim on one target tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The migration's name.
    pub migration: String,
    /// Its state directory, as the runner sees it.
    pub state_dir: String,
    /// The host name of the machine that runs the migration.
    pub runner: String,
    /// Where the claim stands.
    pub state: ClaimState,
    /// When it took that state (RFC 3339).
    pub since: String,
    /// The tree it was copied from (`ssh-host:path`).
    pub source: String,
}

impl Claim {
    fn of(entry: &Entry, state: ClaimState) -> Claim {
        Claim {
            migration: entry.owner.migration.clone(),
            state_dir: entry.owner.state_dir.clone(),
            runner: entry.owner.runner.clone(),
            state,
            since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            source: format!("{}:{}", entry.source.ssh, entry.plan.source_path.display()),
        }
    }

    fn ours(&self, entry: &Entry) -> bool {
        self.migration == entry.owner.migration
            && self.state_dir == entry.owner.state_dir
            && self.runner == entry.owner.runner
    }
}

/// The claim file's path on the target host.
pub fn path(entry: &Entry) -> String {
    let dst = entry.plan.target_path.display().to_string();
    let dst = dst.trim_end_matches('/');
    let (parent, name) = dst.rsplit_once('/').unwrap_or(("", dst));
    format!("{parent}/.{name}.cutover-claim.json")
}

/// The claim on `entry`'s target tree, if any.
pub async fn read(entry: &Entry) -> Result<Option<Claim>, FilesError> {
    let file = path(entry);
    let out = on_host(
        &entry.target,
        &[
            "sh",
            "-c",
            "test -e \"$1\" || exit 3; cat -- \"$1\"",
            "sh",
            &file,
        ],
        TIMEOUT,
    )
    .await?;
    match out.code {
        Some(0) => serde_json::from_str(&out.stdout).map(Some).map_err(|e| {
            FilesError::Claimed(format!(
                "{file} on the target host is not a claim cutover can read ({e}); fix: look at it, and remove it if the tree may be replaced"
            ))
        }),
        Some(3) => Ok(None),
        _ => Err(FilesError::Claimed(format!(
            "cannot read {file} on the target host: {}",
            tail(&out.stderr, 2)
        ))),
    }
}

/// Why a pass of `entry` must not touch the target tree claimed by `claim`, if it must not.
pub fn refusal(entry: &Entry, claim: &Claim) -> Option<String> {
    let dst = entry.plan.target_path.display();
    let file = path(entry);
    match claim.state {
        ClaimState::Live => Some(format!(
            "`{dst}` on the target host is the live side of migration `{}` since {} (moved from {}; state directory {} on {}): a pass would copy the old tree over it, deleting what was written there since. Fix: if its contents may really be replaced, remove {file} on the target host",
            claim.migration, claim.since, claim.source, claim.state_dir, claim.runner
        )),
        ClaimState::Migrating if !claim.ours(entry) => Some(format!(
            "another migration is copying onto `{dst}` on the target host: `{}` (state directory {} on {}, since {}, from {}). Fix: wait for it to finish; if it was abandoned, remove {file} on the target host",
            claim.migration, claim.state_dir, claim.runner, claim.since, claim.source
        )),
        ClaimState::Migrating => None,
    }
}

/// Refuses (with the reason) when the target tree is not this migration's to copy onto.
pub async fn check(entry: &Entry) -> Result<Option<Claim>, FilesError> {
    let claim = read(entry).await?;
    if let Some(why) = claim.as_ref().and_then(|c| refusal(entry, c)) {
        return Err(FilesError::Claimed(why));
    }
    Ok(claim)
}

/// Writes this migration's claim in `state` (the file replaced atomically, private to the ssh
/// user).
pub async fn write(entry: &Entry, state: ClaimState) -> Result<(), FilesError> {
    let file = path(entry);
    let text = serde_json::to_string(&Claim::of(entry, state)).expect("serializable");
    let out = on_host(
        &entry.target,
        &[
            "sh",
            "-c",
            "umask 077 && printf '%s\\n' \"$1\" > \"$2.tmp\" && mv -f -- \"$2.tmp\" \"$2\"",
            "sh",
            &text,
            &file,
        ],
        TIMEOUT,
    )
    .await?;
    if !out.ok() {
        return Err(FilesError::Claimed(format!(
            "cannot write {file} on the target host: {}",
            tail(&out.stderr, 2)
        )));
    }
    Ok(())
}

/// Claims the target tree for this migration before its first pass: refused as [`check`]
/// says, and, when nobody claimed it yet, refused while the tree holds anything the pass would
/// delete or overwrite, unless the plan says it may be replaced (`replace_target`).
pub async fn take(entry: &Entry) -> Result<(), FilesError> {
    if check(entry).await?.is_some() {
        return Ok(());
    }
    if !entry.plan.replace_target
        && let Some(why) = super::preflight::foreign_content_refusal(entry).await?
    {
        return Err(FilesError::Claimed(why));
    }
    write(entry, ClaimState::Migrating).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan;

    fn entry(migration: &str, state: &str) -> Entry {
        let text = format!(
            "[migration]\nname = \"{migration}\"\nstate_dir = \"{state}\"\n\n\
             [hosts.source]\nssh = \"old\"\n\n[hosts.target]\nssh = \"new\"\n\n\
             [[files]]\nname = \"tree\"\nsource_path = \"/srv/app/\"\ntarget_path = \"/srv/app/\"\n"
        );
        let plan = plan::parse_str(&text, std::path::Path::new("p.toml")).unwrap();
        Entry::select(&plan, None).unwrap().remove(0)
    }

    #[test]
    fn the_claim_sits_beside_the_tree() {
        assert_eq!(
            path(&entry("m", "/var/lib/cutover")),
            "/srv/.app.cutover-claim.json"
        );
    }

    #[test]
    fn live_trees_and_other_migrations_are_refused_our_own_is_not() {
        let ours = entry("m", "/var/lib/cutover");
        let migrating = Claim::of(&ours, ClaimState::Migrating);
        assert_eq!(refusal(&ours, &migrating), None);
        let live = Claim::of(&ours, ClaimState::Live);
        assert!(
            refusal(&ours, &live)
                .unwrap()
                .contains("live side of migration `m`")
        );
        let other = entry("m", "/elsewhere");
        let why = refusal(&other, &migrating).unwrap();
        assert!(
            why.contains("another migration") && why.contains("/var/lib/cutover"),
            "{why}"
        );
        assert!(refusal(&entry("n", "/var/lib/cutover"), &migrating).is_some());
    }
}
