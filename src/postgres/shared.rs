//! The daemon's PostgreSQL sessions, one per database: every watch (each pair of each plan,
//! either direction, and each `[[watch]]` entry) that names the same database with the same
//! connection settings reads through one kept session. A PostgreSQL client pipelines
//! statements, so readers share it at once; a reader that gives up on a query (its timeout)
//! leaves the session usable.
//!
//! A reading that fails, or that its caller's timeout cancels, forgets the session
//! ([`SharedSession::forget`]): the next watch to connect opens a fresh one, and watches still holding the old one find out at their own
//! next reading. The registry keeps databases weakly: the session closes once no watch names
//! it any more.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::db::{Db, PgError, Server};

/// Databases shared so far, by connection settings.
static SESSIONS: LazyLock<Mutex<HashMap<String, Weak<SharedSession>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One database's kept session, shared.
pub struct SharedSession {
    /// How to connect again (labelled `host:port/dbname`, whatever end of a pair it is).
    server: Server,
    /// The session, once connected (and until forgotten).
    slot: Mutex<Option<Arc<Db>>>,
    /// Held while connecting: concurrent callers wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
}

impl SharedSession {
    /// The shared session of `server`'s settings (registered now if nobody shares it yet).
    /// Connects lazily, at the first [`SharedSession::session`].
    pub fn of(server: &Server) -> Arc<SharedSession> {
        // `Debug` of the endpoint: secrets appear by reference only.
        let key = format!("{:?}", server.endpoint);
        let mut sessions = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, weak| weak.strong_count() > 0);
        if let Some(shared) = sessions.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        let e = &server.endpoint;
        let shared = Arc::new(SharedSession {
            server: Server {
                side: server.side,
                endpoint: e.clone(),
                label: format!("{}:{}/{}", e.host, e.port, e.dbname),
            },
            slot: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        });
        sessions.insert(key, Arc::downgrade(&shared));
        shared
    }

    /// The session, connected now when there is none (or the last one closed). Concurrent
    /// callers wait for one connection attempt.
    pub async fn session(&self) -> Result<Arc<Db>, PgError> {
        let _connecting = self.connecting.lock().await;
        if let Some(db) = self.kept() {
            return Ok(db);
        }
        let db = Arc::new(self.server.connect().await?);
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
        Ok(db)
    }

    fn kept(&self) -> Option<Arc<Db>> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|db| !db.client().is_closed()).cloned()
    }

    /// A reading on `db` failed or was given up: the next [`SharedSession::session`] connects
    /// again.
    pub fn forget(&self, db: &Arc<Db>) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|kept| Arc::ptr_eq(kept, db)) {
            *slot = None;
        }
    }
}
