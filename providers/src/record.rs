//! Record sets as every adapter exchanges them, with values in one canonical form.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// DNS record types cutover switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Alias.
    #[serde(rename = "CNAME")]
    Cname,
}

impl RecordType {
    /// The record type as written in zone files and provider APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Cname => "CNAME",
        }
    }

    /// Parses `A`, `AAAA` or `CNAME` (any case).
    pub fn parse(text: &str) -> Option<RecordType> {
        match text.to_ascii_uppercase().as_str() {
            "A" => Some(RecordType::A),
            "AAAA" => Some(RecordType::Aaaa),
            "CNAME" => Some(RecordType::Cname),
            _ => None,
        }
    }

    /// The canonical text of one value: dotted IPv4, compressed IPv6, or a lowercase host name
    /// without the trailing dot. `None` when the value is not valid for this type.
    pub fn normalize(self, value: &str) -> Option<String> {
        let value = value.trim();
        match self {
            RecordType::A => value.parse::<Ipv4Addr>().ok().map(|a| a.to_string()),
            RecordType::Aaaa => value.parse::<Ipv6Addr>().ok().map(|a| a.to_string()),
            RecordType::Cname => {
                let host = fqdn(value);
                (!host.is_empty()).then_some(host)
            }
        }
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record set: every value of one name and type, with its TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// Lowercase FQDN without the trailing dot.
    pub name: String,
    /// Type.
    pub record_type: RecordType,
    /// TTL in seconds.
    pub ttl: u32,
    /// Canonical values, sorted.
    pub values: Vec<String>,
}

impl RecordSet {
    /// Builds a set, normalising the name and values (invalid values are kept verbatim so a
    /// comparison with the plan fails visibly rather than silently dropping them).
    pub fn new(name: &str, record_type: RecordType, ttl: u32, values: &[String]) -> RecordSet {
        let mut values: Vec<String> = values
            .iter()
            .map(|v| {
                record_type
                    .normalize(v)
                    .unwrap_or_else(|| v.trim().to_owned())
            })
            .collect();
        values.sort();
        values.dedup();
        RecordSet {
            name: fqdn(name),
            record_type,
            ttl,
            values,
        }
    }

    /// The same set with another TTL.
    pub fn with_ttl(&self, ttl: u32) -> RecordSet {
        RecordSet {
            ttl,
            ..self.clone()
        }
    }

    /// The same set with other values.
    pub fn with_values(&self, values: &[String]) -> RecordSet {
        RecordSet::new(&self.name, self.record_type, self.ttl, values)
    }

    /// Values as an absolute name (trailing dot) where the type holds a host name.
    pub fn values_with_dot(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| match self.record_type {
                RecordType::Cname => format!("{v}."),
                _ => v.clone(),
            })
            .collect()
    }
}

/// Lowercase, without the trailing dot.
pub fn fqdn(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `name` relative to `zone`: `@` for the apex, else the labels in front of the zone.
pub fn relative_name(name: &str, zone: &str) -> String {
    let (name, zone) = (fqdn(name), fqdn(zone));
    if name == zone {
        "@".to_owned()
    } else {
        name.strip_suffix(&format!(".{zone}"))
            .map(str::to_owned)
            .unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_canonical_and_sorted() {
        let set = RecordSet::new(
            "App.Example.COM.",
            RecordType::Aaaa,
            60,
            &["2001:DB8:0:0::2".into(), "2001:db8::1".into()],
        );
        assert_eq!(set.name, "app.example.com");
        assert_eq!(set.values, vec!["2001:db8::1", "2001:db8::2"]);
        let cname = RecordSet::new(
            "a.example.com",
            RecordType::Cname,
            60,
            &["New.Example.com.".into()],
        );
        assert_eq!(cname.values, vec!["new.example.com"]);
        assert_eq!(cname.values_with_dot(), vec!["new.example.com."]);
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative_name("example.com.", "example.com"), "@");
        assert_eq!(relative_name("git.Example.com", "example.com."), "git");
        assert_eq!(relative_name("a.b.example.com", "example.com"), "a.b");
    }
}

/// One existing record of a provider that stores records one by one (Cloudflare, DigitalOcean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord<Id> {
    /// The provider's id.
    pub id: Id,
    /// Canonical value.
    pub value: String,
    /// TTL.
    pub ttl: u32,
}

/// What to change so the stored records become `wanted`, touching as little as possible:
/// matching values keep their record (TTL fixed if needed), other records are rewritten in
/// place before any is created or deleted, so the name never has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordChanges<Id> {
    /// Records to update: id, new value, TTL.
    pub update: Vec<(Id, String, u32)>,
    /// Values to create.
    pub create: Vec<String>,
    /// Records to delete.
    pub delete: Vec<Id>,
}

impl<Id: Clone> RecordChanges<Id> {
    /// Computes the changes from `stored` to `wanted`.
    pub fn between(stored: &[StoredRecord<Id>], wanted: &RecordSet) -> RecordChanges<Id> {
        let mut update = Vec::new();
        let mut spare = Vec::new();
        let mut missing: Vec<&String> = wanted.values.iter().collect();
        for record in stored {
            match missing.iter().position(|v| **v == record.value) {
                Some(i) => {
                    missing.remove(i);
                    if record.ttl != wanted.ttl {
                        update.push((record.id.clone(), record.value.clone(), wanted.ttl));
                    }
                }
                None => spare.push(record.id.clone()),
            }
        }
        let mut spare = spare.into_iter();
        let mut create = Vec::new();
        for value in missing {
            match spare.next() {
                Some(id) => update.push((id, value.clone(), wanted.ttl)),
                None => create.push(value.clone()),
            }
        }
        RecordChanges {
            update,
            create,
            delete: spare.collect(),
        }
    }

    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.update.is_empty() && self.create.is_empty() && self.delete.is_empty()
    }
}

#[cfg(test)]
mod diff_tests {
    use super::*;

    fn stored(id: u32, value: &str, ttl: u32) -> StoredRecord<u32> {
        StoredRecord {
            id,
            value: value.into(),
            ttl,
        }
    }

    #[test]
    fn rewrites_in_place_before_creating_or_deleting() {
        let wanted = RecordSet::new("a.example.com", RecordType::A, 60, &["192.0.2.9".into()]);
        let changes = RecordChanges::between(
            &[stored(1, "192.0.2.1", 300), stored(2, "192.0.2.2", 300)],
            &wanted,
        );
        assert_eq!(changes.update, vec![(1, "192.0.2.9".to_owned(), 60)]);
        assert!(changes.create.is_empty());
        assert_eq!(changes.delete, vec![2]);
    }

    #[test]
    fn keeps_matching_values_and_fixes_ttl_only() {
        let wanted = RecordSet::new(
            "a.example.com",
            RecordType::A,
            60,
            &["192.0.2.1".into(), "192.0.2.3".into()],
        );
        let changes = RecordChanges::between(&[stored(1, "192.0.2.1", 60)], &wanted);
        assert!(changes.update.is_empty());
        assert_eq!(changes.create, vec!["192.0.2.3".to_owned()]);
        assert!(
            RecordChanges::between(
                &[stored(1, "192.0.2.1", 60), stored(2, "192.0.2.3", 60)],
                &wanted
            )
            .is_empty()
        );
    }
}
