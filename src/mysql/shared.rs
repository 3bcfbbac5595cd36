//! The daemon's MySQL/MariaDB sessions, one per server: every watch (each pair of each plan,
//! either direction, and each `[[watch]]` entry) that names the same server with the same
//! connection settings reads through one kept session, so a fleet of pairs on one server costs
//! that server one session, not one per pair.
//!
//! A MySQL session runs one statement at a time, so a reading borrows the session
//! ([`SharedServer::lock`]) and gives it back only when it finished cleanly
//! ([`Session::keep`]). A reading that failed, or was cancelled by its caller's timeout halfway
//! through the protocol, drops the session instead: the next borrower connects a fresh one
//! (while it holds the lock, so a dead server is connected to once per attempt, not once per
//! waiting reader). The registry keeps servers weakly: the session closes once no watch names
//! the server any more.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::db::{Db, MyError, Server};

/// Servers shared so far, by connection settings.
static SERVERS: LazyLock<Mutex<HashMap<String, Weak<SharedServer>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One server's kept session, shared.
pub struct SharedServer {
    /// The connection settings (`Debug` of the endpoint: secrets appear by reference only).
    key: String,
    /// How to connect again.
    server: Server,
    /// The session when idle; `None` while borrowed or after a failed reading.
    slot: tokio::sync::Mutex<Option<Db>>,
}

/// A borrowed session: derefs to the [`Db`]; [`Session::keep`] gives it back for the next
/// reading, dropping it without `keep` closes it.
pub struct Session<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Db>>,
    db: Option<Db>,
}

impl SharedServer {
    /// The shared session of `server`'s settings (registered now if nobody shares it yet).
    /// Connects lazily, at the first [`SharedServer::lock`].
    pub fn of(server: &Server) -> Arc<SharedServer> {
        let key = format!("{:?}", server.endpoint);
        let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|_, weak| weak.strong_count() > 0);
        if let Some(shared) = servers.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        let shared = Arc::new(SharedServer::private(server));
        servers.insert(key, Arc::downgrade(&shared));
        shared
    }

    /// A session of its own, shared with nobody (a pair whose two ends are the same server:
    /// one reading holds both at once).
    pub fn private(server: &Server) -> SharedServer {
        SharedServer {
            key: format!("{:?}", server.endpoint),
            server: server.clone(),
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether `self` is locked before `other` when a reading needs both (one order for every
    /// reader; a private session of the same settings comes after the shared one).
    pub fn orders_before(&self, other: &SharedServer) -> bool {
        (&self.key, self as *const SharedServer as usize)
            < (&other.key, other as *const SharedServer as usize)
    }

    /// Whether `self` and `other` are the same server's settings.
    pub fn same_server(&self, other: &SharedServer) -> bool {
        self.key == other.key
    }

    /// Borrows the session, connecting first when there is none; `label` names the server in
    /// this borrower's messages (`source ...`, `target ...`).
    pub async fn lock(&self, label: &str) -> Result<Session<'_>, MyError> {
        let mut slot = self.slot.lock().await;
        let mut db = match slot.take() {
            Some(db) => db,
            None => {
                Server {
                    label: label.to_owned(),
                    endpoint: self.server.endpoint.clone(),
                }
                .connect()
                .await?
            }
        };
        db.label = label.to_owned();
        Ok(Session { slot, db: Some(db) })
    }

    /// Whether a session is connected and idle now (for tests and the daemon's accounting).
    pub async fn connected(&self) -> bool {
        self.slot.lock().await.is_some()
    }
}

impl Session<'_> {
    /// The reading finished cleanly: the session stays for the next one.
    pub fn keep(mut self) {
        *self.slot = self.db.take();
    }
}

impl std::ops::Deref for Session<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db.as_ref().expect("a session is borrowed until kept")
    }
}

impl std::ops::DerefMut for Session<'_> {
    fn deref_mut(&mut self) -> &mut Db {
        self.db.as_mut().expect("a session is borrowed until kept")
    }
}
