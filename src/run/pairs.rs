//! The one factory from a plan to its database pairs behind the engine contract: the run, the
//! daemon and the single-pair commands get their pairs here and drive them through
//! [`crate::engine::Pair`] and [`crate::engine::Window`], never through an engine's own calls.

use super::steps::Db;
use crate::engine::{self, DbError, Window};
use crate::plan::Plan;
use crate::{mysql, postgres};

/// Pair `db` of `plan`.
pub fn pair(plan: &Plan, db: Db) -> Box<dyn engine::Pair> {
    match db {
        Db::Postgres(i) => Box::new(postgres::Pair::new(plan, &plan.postgres[i])),
        Db::Mysql(i) => Box::new(mysql::Pair::new(plan, &plan.mysql[i])),
    }
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
