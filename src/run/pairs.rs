//! The one factory from a plan to its database pairs behind the engine contract: the run, the
//! daemon and the single-pair commands get their pairs here and drive them through
//! [`crate::engine::Pair`] and [`crate::engine::Window`], never through an engine's own calls.

use serde::Serialize;

use crate::engine::{self, DbError, Engine, Window};
use crate::plan::Plan;
use crate::{mysql, postgres};

/// Every engine, in the order the run lists, gates, fences and promotes their pairs. Adding
/// an engine is its folder and one line here.
pub const ENGINES: [Engine; 2] = [Engine::of::<postgres::Pair>(), Engine::of::<mysql::Pair>()];

/// A database pair of the plan: its engine (a place in [`ENGINES`]) and its place in that
/// engine's section. Written as `{"engine": "postgres", "index": 0}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Db {
    engine: usize,
    index: usize,
}

impl Db {
    /// The `index`th pair of the engine whose section is `section` (`None`: no such engine).
    pub fn of(section: &str, index: usize) -> Option<Db> {
        let engine = ENGINES.iter().position(|e| e.section == section)?;
        Some(Db { engine, index })
    }

    /// Its engine.
    pub fn engine(self) -> &'static Engine {
        &ENGINES[self.engine]
    }
}

impl Serialize for Db {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Db", 2)?;
        out.serialize_field("engine", self.engine().section)?;
        out.serialize_field("index", &self.index)?;
        out.end()
    }
}

/// Every database pair of `plan`, engine by engine in [`ENGINES`]' order.
pub fn all(plan: &Plan) -> Vec<(Db, Box<dyn engine::Pair>)> {
    ENGINES
        .iter()
        .enumerate()
        .flat_map(|(engine, e)| {
            (e.pairs)(plan)
                .into_iter()
                .enumerate()
                .map(move |(index, p)| (Db { engine, index }, p))
        })
        .collect()
}

/// Pair `db` of `plan`.
///
/// # Panics
/// When `plan` has no such pair: a `Db` comes from [`all`] over the same plan.
pub fn pair(plan: &Plan, db: Db) -> Box<dyn engine::Pair> {
    let mut pairs = (db.engine().pairs)(plan);
    assert!(db.index < pairs.len(), "{db:?} is not a pair of this plan");
    pairs.swap_remove(db.index)
}

/// Opens the window of one pair; `resume`: its history is unknown; `reverse`: the pair seen
/// backwards (a reverse cutover).
pub async fn open_window(
    plan: &Plan,
    db: Db,
    resume: bool,
    reverse: bool,
) -> Result<Box<dyn Window>, DbError> {
    let mut p = pair(plan, db);
    if reverse {
        p = p.reversed();
    }
    p.window(resume).await
}
