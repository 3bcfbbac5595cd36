//! What the TTL job saves per record in the state directory's `dns/` (laid out by
//! [`crate::state::StateDir`], written through its durable writes), and the DNS event log.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cutover_providers::RecordType;
use serde::{Deserialize, Serialize};

use super::DnsError;

/// The saved TTL state of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlState {
    /// Record name.
    pub name: String,
    /// Record type.
    pub record_type: RecordType,
    /// Zone.
    pub zone: String,
    /// The TTL before the first `lower-ttl`; `restore-ttl` puts it back.
    pub old_ttl: u32,
    /// The values before the first `lower-ttl`.
    pub old_values: Vec<String>,
    /// The TTL the record was lowered to.
    pub lowered_ttl: u32,
    /// When the provider was asked to lower it.
    #[serde(with = "timestamp")]
    pub lowered_at: SystemTime,
    /// When every authoritative server was first seen serving the lowered TTL.
    #[serde(default, with = "timestamp_opt")]
    pub served_everywhere_at: Option<SystemTime>,
    /// When `dns update` switched the record, if it did.
    #[serde(default, with = "timestamp_opt")]
    pub updated_at: Option<SystemTime>,
}

impl TtlState {
    /// Earliest safe cutover: the moment every server served the lowered TTL plus the old
    /// TTL (the longest a cache may still hold the old answer with its old TTL).
    pub fn safe_at(&self) -> Option<SystemTime> {
        self.served_everywhere_at
            .map(|at| at + Duration::from_secs(u64::from(self.old_ttl)))
    }
}

/// The DNS records' saved state of one migration.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The DNS state of the migration whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> Records {
        Records {
            dir: crate::state::StateDir::new(state_dir).dns(),
        }
    }

    /// The file holding `name`/`record_type`'s state.
    pub fn path(&self, name: &str, record_type: RecordType) -> PathBuf {
        self.dir.join(format!(
            "{}_{}.json",
            cutover_providers::fqdn(name),
            record_type.as_str()
        ))
    }

    fn error(path: &Path, detail: impl std::fmt::Display) -> DnsError {
        DnsError::State {
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// The saved state, if any.
    pub fn load(&self, name: &str, record_type: RecordType) -> Result<Option<TtlState>, DnsError> {
        let path = self.path(name, record_type);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Self::error(
                    &path,
                    format!("unreadable saved DNS state ({e}); fix: restore the old TTL by hand, delete the file and lower the TTL again"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::error(&path, e)),
        }
    }

    /// Saves `state` atomically and durably, through the state directory's one writer (a
    /// unique temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, state: &TtlState) -> Result<(), DnsError> {
        let path = self.path(&state.name, state.record_type);
        let text = serde_json::to_string_pretty(state).map_err(|e| Self::error(&path, e))?;
        crate::state::write_atomic(&path, (text + "\n").as_bytes())
            .map_err(|e| Self::error(&path, e))
    }

    /// Forgets a record's state (after `restore-ttl`).
    pub fn remove(&self, name: &str, record_type: RecordType) -> Result<(), DnsError> {
        let path = self.path(name, record_type);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::error(&path, e)),
        }
    }

    /// Appends one event (JSON object) to `events.jsonl`, stamped with the time, durably.
    pub fn log_event(&self, event: &str, mut fields: serde_json::Value) -> Result<(), DnsError> {
        let path = self.dir.join("events.jsonl");
        if let Some(map) = fields.as_object_mut() {
            map.insert("event".into(), event.into());
            map.insert(
                "at".into(),
                humantime::format_rfc3339_millis(SystemTime::now())
                    .to_string()
                    .into(),
            );
        }
        crate::state::append_line(&path, &fields.to_string()).map_err(|e| Self::error(&path, e))
    }
}

/// RFC 3339 timestamps.
mod timestamp {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(D::Error::custom)
    }
}

/// Optional RFC 3339 timestamps.
mod timestamp_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_safe_time_adds_the_old_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let states = Records::new(dir.path());
        let served = humantime::parse_rfc3339("2026-11-21T10:00:00Z").unwrap();
        let state = TtlState {
            name: "app.example.com".into(),
            record_type: RecordType::A,
            zone: "example.com".into(),
            old_ttl: 3600,
            old_values: vec!["192.0.2.1".into()],
            lowered_ttl: 60,
            lowered_at: served,
            served_everywhere_at: Some(served),
            updated_at: None,
        };
        states.save(&state).unwrap();
        assert_eq!(
            states.load("App.Example.com.", RecordType::A).unwrap(),
            Some(state.clone())
        );
        assert_eq!(
            state.safe_at(),
            Some(humantime::parse_rfc3339("2026-11-21T11:00:00Z").unwrap())
        );
        states.remove("app.example.com", RecordType::A).unwrap();
        assert_eq!(states.load("app.example.com", RecordType::A).unwrap(), None);
    }
}
