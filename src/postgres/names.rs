//! Names of the objects cutover creates, derived from the migration and pair names so every
//! command (and every re-run) finds the same ones.

/// Schema cutover creates on both servers for its own tables.
pub const SCHEMA: &str = "cutover";
/// Table (in [`SCHEMA`]) whose rows mark the fence point; it is part of the publication.
pub const MARKER_TABLE: &str = "fence_marker";
/// Table (in [`SCHEMA`]) remembering which roles cutover blocked and whether they could log in
/// before; never published, so each server keeps its own.
pub const ROLE_TABLE: &str = "blocked_role";
/// Table (in [`SCHEMA`]) remembering the `CONNECT` grants on the database that a
/// database-scoped fence revoked or added, so unfencing restores exactly the grants that were
/// there; never published.
pub const CONNECT_TABLE: &str = "blocked_connect";

/// The replication object names of one pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Names {
    /// Publication on the source.
    pub publication: String,
    /// Subscription on the target; its slot on the source has the same name.
    pub subscription: String,
    /// Publication on the target for reverse replication.
    pub reverse_publication: String,
    /// Subscription on the source for reverse replication (slot on the target, same name).
    pub reverse_subscription: String,
    /// The pair name, as stored in cutover's tables.
    pub pair: String,
}

impl Names {
    /// Names for pair `pair` of migration `migration` (both already validated as
    /// lowercase letters, digits, `-`, `_`, at most 24 characters each).
    pub fn new(migration: &str, pair: &str) -> Names {
        let base = format!("cutover_{}_{}", slug(migration), slug(pair));
        Names {
            publication: base.clone(),
            subscription: base.clone(),
            reverse_publication: format!("{base}_rev"),
            reverse_subscription: format!("{base}_rev"),
            pair: pair.to_owned(),
        }
    }

    /// Slot of the forward subscription (on the source).
    pub fn slot(&self) -> &str {
        &self.subscription
    }

    /// Slot of the reverse subscription (on the target).
    pub fn reverse_slot(&self) -> &str {
        &self.reverse_subscription
    }
}

/// Replication slot names allow only `[a-z0-9_]` and at most 63 bytes.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_slot_names_and_stable() {
        let long = "a".repeat(24);
        let n = Names::new(&long, &format!("{}-x", "b".repeat(22)));
        for name in [&n.publication, &n.reverse_subscription] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
        // Pinned: a re-run, another process or a new release must find the same objects.
        let n = Names::new("m-1", "app");
        assert_eq!(
            (
                n.publication.as_str(),
                n.slot(),
                n.reverse_publication.as_str(),
                n.reverse_slot(),
                n.pair.as_str()
            ),
            (
                "cutover_m_1_app",
                "cutover_m_1_app",
                "cutover_m_1_app_rev",
                "cutover_m_1_app_rev",
                "app"
            )
        );
        // Two pairs, or two migrations, never share objects.
        assert_ne!(Names::new("m", "a").slot(), Names::new("m", "b").slot());
        assert_ne!(Names::new("m1", "a").slot(), Names::new("m2", "a").slot());
        assert_ne!(
            Names::new("m", "a").slot(),
            Names::new("m", "a").reverse_slot()
        );
    }
}
