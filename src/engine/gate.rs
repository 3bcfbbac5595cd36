//! The adaptive gate: one loop for every engine, driven through [`Window::progress`]. After
//! the engine's own gate passed (running, no drift, no prepared transaction, every writer
//! covered), it samples what the source has committed and what the target has applied every
//! [`SAMPLE_EVERY`], measures both rates over the last [`RATE_SPAN`], and lets the fence come
//! at the first sample where the predicted catch-up (backlog / apply rate, plus the fixed cost
//! of the fence and the promotion) fits the plan's `window_budget`. While it waits it says what
//! it waits for every [`SAY_EVERY`]; at `gate_timeout` it refuses with the figures and what
//! would help, nothing fenced.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{DbError, Gated, Progress, Unit, Window};

/// How often the backlog is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The span the rates are measured over.
pub const RATE_SPAN: Duration = Duration::from_secs(1);
/// How often a wait says what it waits for.
pub const SAY_EVERY: Duration = Duration::from_secs(5);
/// Statements of the fence and the promotion, in round trips of a progress reading: the fixed
/// cost added to every prediction (estimated from this run's own reading time).
const FIXED_ROUND_TRIPS: u32 = 12;

/// The budget a window must fit.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The longest predicted window (catch-up plus the fixed cost) the gate lets through.
    pub window: Duration,
    /// How long it waits for that before refusing.
    pub timeout: Duration,
}

impl Budget {
    /// The plan's budget (`None`: no `window_budget`, the adaptive gate is off).
    pub fn of(plan: &crate::plan::Plan) -> Option<Budget> {
        plan.migration.window_budget.map(|window| Budget {
            window,
            timeout: plan.migration.gate_timeout,
        })
    }
}

/// One prediction from the samples so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Committed on the source, not applied on the target (in `unit`).
    pub backlog: u64,
    /// What the counters count.
    pub unit: Unit,
    /// The source's commit rate over the span, per second (`None`: not enough samples yet).
    pub source_rate: Option<f64>,
    /// The target's apply rate over the span, per second.
    pub apply_rate: Option<f64>,
    /// The predicted catch-up after the fence (`None`: it would not end: nothing applies).
    pub catch_up_ms: Option<f64>,
    /// The fixed cost added (fence and promotion statements).
    pub fixed_ms: f64,
    /// The target's measured delay over the span, when it was the floor of `catch_up_ms`
    /// (longer than the backlog over the apply rate).
    #[serde(default)]
    pub delay_floor_ms: Option<f64>,
}

impl Prediction {
    /// The predicted window (catch-up plus fixed cost), if it ends.
    pub fn window_ms(&self) -> Option<f64> {
        self.catch_up_ms.map(|c| c + self.fixed_ms)
    }

    /// The figures in words.
    pub fn words(&self) -> String {
        let rate = |r: Option<f64>| match r {
            Some(r) => format!("{r:.0} {}/s", self.unit.word()),
            None => "not measured yet".to_owned(),
        };
        format!(
            "backlog {} {}, source commits {}, target applies {}, predicted window {}",
            self.backlog,
            self.unit.word(),
            rate(self.source_rate),
            rate(self.apply_rate),
            match (self.window_ms(), self.delay_floor_ms) {
                (Some(ms), Some(delay)) => format!(
                    "{ms:.0} ms (the target's measured delay, {delay:.0} ms, is longer than the backlog takes at its apply rate)"
                ),
                (Some(ms), None) => format!("{ms:.0} ms"),
                (None, _) => "unbounded (nothing applies)".to_owned(),
            }
        )
    }
}

/// What the gate waited, and what it predicted when it let the fence come.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Waited {
    /// From the first sample to the decision.
    pub waited_ms: f64,
    /// The prediction that fitted.
    pub prediction: Prediction,
}

/// The samples of the last [`RATE_SPAN`], and the prediction they give.
#[derive(Debug, Default)]
pub struct Sampler {
    samples: VecDeque<(Instant, Progress)>,
}

impl Sampler {
    /// Adds a reading taken at `at`, forgetting what fell out of the span.
    pub fn push(&mut self, at: Instant, p: Progress) {
        self.samples.push_back((at, p));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_SPAN)
        {
            self.samples.pop_front();
        }
    }

    /// The prediction, with `fixed` added for the fence and the promotion.
    pub fn predict(&self, fixed: Duration) -> Option<Prediction> {
        let (last_at, last) = self.samples.back()?;
        let backlog = last.committed.saturating_sub(last.applied);
        let (first_at, first) = self.samples.front()?;
        let span = last_at.duration_since(*first_at).as_secs_f64();
        // Rates need a span long enough to mean something.
        let rates = (span >= RATE_SPAN.as_secs_f64() / 2.0).then(|| {
            (
                last.committed.saturating_sub(first.committed) as f64 / span,
                last.applied.saturating_sub(first.applied) as f64 / span,
            )
        });
        let mut delay_floor_ms = None;
        let catch_up_ms = if backlog == 0 {
            Some(0.0)
        } else {
            match rates {
                // The engine's reporting residue (a subscriber reports what it applied in
                // steps) is not work left: only what exceeds it is divided by the rate. The
                // target's measured delay is the floor: what the source committed a moment
                // ago took that long to be applied, whatever the rates say.
                Some((_, apply)) if apply > 0.0 => {
                    let by_rate = backlog.saturating_sub(last.settled) as f64 / apply * 1000.0;
                    let delay = self.delay_ms(last.settled).unwrap_or(0.0);
                    if delay > by_rate {
                        delay_floor_ms = Some(delay);
                    }
                    Some(by_rate.max(delay))
                }
                // Nothing committed and nothing applied over the span, a residue within what
                // the engine calls settled (a subscriber confirms lazily when idle).
                Some((source, _)) if source == 0.0 && backlog <= last.settled => Some(0.0),
                Some(_) => None,
                // Too early for rates: even a small residue waits for them (a held applier
                // looks settled until the source is seen moving and the target not).
                None => None,
            }
        };
        Some(Prediction {
            backlog,
            unit: last.unit,
            source_rate: rates.map(|r| r.0),
            apply_rate: rates.map(|r| r.1),
            catch_up_ms,
            fixed_ms: fixed.as_secs_f64() * 1000.0,
            delay_floor_ms,
        })
    }

    /// How long the target takes, lately, to apply what the source committed: over the span,
    /// for each sample the time to the later sample that shows its committed position applied
    /// (beyond the engine's residue `settled`), the crossing interpolated between the two
    /// samples around it; the median of those. It holds what the rates miss (decoding, the
    /// network, an applier that works in bursts), which the catch-up after the fence pays
    /// too. The median, not the longest: a fence falls at one moment of the span, and the
    /// longest of ten samples refused loads the target applied well within the budget
    /// (PostgreSQL, 2 saturating connections: floors of 112-146 ms where the windows that
    /// cut over measured 26-66 ms from the fence to caught up).
    fn delay_ms(&self, settled: u64) -> Option<f64> {
        let mut delays = Vec::new();
        for (i, (at, p)) in self.samples.iter().enumerate() {
            let goal = p.committed.saturating_sub(settled);
            let mut before = (*at, p.applied);
            for (later_at, later) in self.samples.range(i + 1..) {
                if later.applied >= goal {
                    let (t0, a0) = before;
                    let step = later.applied.saturating_sub(a0).max(1) as f64;
                    let part = goal.saturating_sub(a0) as f64 / step;
                    let crossed = t0 + later_at.duration_since(t0).mul_f64(part.min(1.0));
                    delays.push(crossed.duration_since(*at).as_secs_f64() * 1000.0);
                    break;
                }
                before = (*later_at, later.applied);
            }
        }
        delays.sort_by(f64::total_cmp);
        delays.get(delays.len() / 2).copied()
    }
}

/// One window's samples and reading times, from which its fixed cost is estimated.
#[derive(Default)]
struct Tracked {
    sampler: Sampler,
    reads: Vec<Duration>,
}

impl Tracked {
    /// Samples `w` once and predicts; `None`: it cannot tell its backlog.
    async fn sample(&mut self, w: &mut dyn Window) -> Result<Option<Prediction>, DbError> {
        let t = Instant::now();
        let Some(p) = w.progress().await? else {
            return Ok(None);
        };
        self.reads.push(t.elapsed());
        self.sampler.push(Instant::now(), p);
        self.reads.sort();
        // Fixed cost: the fence's and the promotion's statements, each a round trip like the
        // two reads of a sample (the median reading).
        let fixed = self.reads[self.reads.len() / 2] / 2 * FIXED_ROUND_TRIPS;
        // Never `None` here: a sample was just pushed.
        Ok(self.sampler.predict(fixed))
    }
}

/// The prediction fits the budget; or nothing is left to catch up and the fixed cost alone
/// exceeds the budget (servers far apart): waiting could not make that window shorter.
fn fits(p: &Prediction, budget: Budget) -> bool {
    let budget_ms = budget.window.as_secs_f64() * 1000.0;
    p.window_ms().is_some_and(|ms| ms <= budget_ms)
        || (p.catch_up_ms == Some(0.0) && p.fixed_ms > budget_ms)
}

/// Waits until `w`'s predicted window fits `budget`, on the samples `tracked` already holds
/// (a wait resumed after the pair's own checks ran again decides at its first sample, on the
/// rates it had measured), the timeout counted from `started`; `say` hears every
/// [`SAY_EVERY`] what it waits for. `Ok(None)`: the engine cannot measure its backlog (the
/// fixed ceilings decide). Refused at the timeout with the figures, nothing fenced.
async fn wait_until_fits(
    w: &mut dyn Window,
    budget: Budget,
    say: &mut (dyn FnMut(String) + Send),
    tracked: &mut Tracked,
    started: Instant,
) -> Result<Option<Waited>, DbError> {
    let mut last_said = Instant::now();
    loop {
        let Some(prediction) = tracked.sample(w).await? else {
            return Ok(None);
        };
        if fits(&prediction, budget) {
            return Ok(Some(Waited {
                waited_ms: started.elapsed().as_secs_f64() * 1000.0,
                prediction,
            }));
        }
        let left = budget.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(DbError::Refused(format!(
                "{}: the predicted window did not fit window_budget ({}) within gate_timeout ({}); nothing was fenced, the source serves: {}; what would help: {}",
                w.component(),
                humantime::format_duration(budget.window),
                humantime::format_duration(budget.timeout),
                prediction.words(),
                help(&prediction, budget)
            )));
        }
        if last_said.elapsed() >= SAY_EVERY {
            last_said = Instant::now();
            say(format!(
                "{}: waiting for the window to fit {} ({} left): {}",
                w.component(),
                humantime::format_duration(budget.window),
                humantime::format_duration(Duration::from_secs(left.as_secs())),
                prediction.words()
            ));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// Waits until every pair of `windows` predicts a window within `budget` at the same sample
/// (pairs fenced together are only as quick as the slowest); `say` hears every [`SAY_EVERY`]
/// which pairs do not fit yet. Pairs that cannot sample their backlog are left to their fixed
/// ceilings. Refused at the timeout naming the pairs that did not fit, nothing fenced.
pub async fn wait_until_all_fit(
    windows: &mut [&mut Box<dyn Window>],
    budget: Budget,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Vec<(String, Waited)>, DbError> {
    let started = Instant::now();
    // `None`: a window that cannot tell its backlog, left to its fixed ceilings.
    let mut tracked: Vec<Option<Tracked>> =
        windows.iter().map(|_| Some(Tracked::default())).collect();
    let mut last_said = Instant::now();
    loop {
        let mut fitting = Vec::new();
        let mut behind = Vec::new();
        for (w, t) in windows.iter_mut().zip(tracked.iter_mut()) {
            let Some(tr) = t else { continue };
            match tr.sample(w.as_mut()).await? {
                None => *t = None,
                Some(p) if fits(&p, budget) => fitting.push((w.component(), p)),
                Some(p) => behind.push((w.component(), p)),
            }
        }
        let waited_ms = started.elapsed().as_secs_f64() * 1000.0;
        if behind.is_empty() {
            return Ok(fitting
                .into_iter()
                .map(|(c, prediction)| {
                    (
                        c,
                        Waited {
                            waited_ms,
                            prediction,
                        },
                    )
                })
                .collect());
        }
        let list = |pairs: &[(String, Prediction)]| {
            pairs
                .iter()
                .map(|(c, p)| format!("{c}: {}", p.words()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let left = budget.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(DbError::Refused(format!(
                "the pairs fenced together did not all fit window_budget ({}) at once within gate_timeout ({}); nothing was fenced, every source serves; not fitting: {}; what would help: {}",
                humantime::format_duration(budget.window),
                humantime::format_duration(budget.timeout),
                list(&behind),
                help(&behind[0].1, budget)
            )));
        }
        if last_said.elapsed() >= SAY_EVERY {
            last_said = Instant::now();
            say(format!(
                "waiting for every pair to fit {} together ({} left); not yet: {}",
                humantime::format_duration(budget.window),
                humantime::format_duration(Duration::from_secs(left.as_secs())),
                list(&behind)
            ));
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// A gate that waited longer than this runs the pair's own checks again before the fence.
const REGATE_AFTER: Duration = Duration::from_secs(1);

/// A pair's whole gate: its own checks, then (with a budget) the wait until its predicted
/// window fits. A pair only behind a fixed ceiling ([`DbError::Behind`]) is waited on,
/// every other refusal stands; after a wait the pair's own checks run again, the ceilings as
/// hard limits, and the gate passes only on a sample taken after them that still fits (the
/// checks take a while under load, and a prediction from before them would be stale at the
/// fence). Returns the gate and, when it waited, what it predicted.
pub async fn gate(
    w: &mut dyn Window,
    budget: Option<Budget>,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<(Gated, Option<Waited>), DbError> {
    let Some(budget) = budget else {
        return Ok((w.gate().await?, None));
    };
    let waiting = |w: &dyn Window, why: &str| {
        format!("{}: {why}; waiting for the backlog to clear", w.component())
    };
    // `gated`: the pair's own checks as last run; `None` while only behind a ceiling.
    let mut gated = match own_checks(w).await? {
        Ok(g) => Some(g),
        Err(why) => {
            say(waiting(w, &why));
            None
        }
    };
    let started = Instant::now();
    let mut last_said = started;
    let mut tracked = Tracked::default();
    loop {
        let checked = Instant::now();
        let Some(fit) = wait_until_fits(w, budget, say, &mut tracked, started).await? else {
            // No backlog to measure: the fixed ceilings decide (the checks again if they failed).
            let gated = match gated {
                Some(g) => g,
                None => w.gate().await?,
            };
            return Ok((gated, None));
        };
        if let Some(g) = gated.take()
            && checked.elapsed() <= REGATE_AFTER
        {
            // The checks were recent enough: the fit holds at the fence.
            return Ok((g, Some(fit)));
        }
        // They took a while, or the wait did, and the backlog moved meanwhile: the checks
        // again, and the fence only on a sample taken after them that still fits. Their reading
        // of the lag is one moment of a moving load: over a ceiling there, the wait goes on
        // (the timeout still counts from the start), as it does before.
        match own_checks(w).await? {
            Ok(g) => gated = Some(g),
            Err(why) if started.elapsed() >= budget.timeout => {
                return Err(DbError::Refused(format!(
                    "{}: {why}, still at gate_timeout ({}); nothing was fenced, the source serves",
                    w.component(),
                    humantime::format_duration(budget.timeout)
                )));
            }
            Err(why) => {
                if last_said.elapsed() >= SAY_EVERY {
                    last_said = Instant::now();
                    say(waiting(w, &why));
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        }
    }
}

/// The pair's own checks; `Ok(Err(why))`: it is only behind a fixed ceiling, which the gate
/// waits on rather than refuses.
async fn own_checks(w: &mut dyn Window) -> Result<Result<Gated, String>, DbError> {
    match w.gate().await {
        Ok(g) => Ok(Ok(g)),
        Err(DbError::Behind(why)) => Ok(Err(why)),
        Err(e) => Err(e),
    }
}

/// What would let a refused gate pass, from its last figures.
fn help(p: &Prediction, budget: Budget) -> String {
    if p.fixed_ms > budget.window.as_secs_f64() * 1000.0 {
        return format!(
            "the fence's and the promotion's statements alone take about {:.0} ms on these servers (round trips), more than window_budget: a larger `window_budget` (at least {:.0}ms), or `window_budget = \"off\"`",
            p.fixed_ms,
            (p.fixed_ms * 1.5).ceil()
        );
    }
    match (p.source_rate, p.apply_rate) {
        (_, Some(0.0)) => {
            "the target applies nothing: look for what holds its applier (a lock, a long query, FLUSH TABLES WITH READ LOCK, a stopped worker)".to_owned()
        }
        (Some(source), Some(apply)) if source > apply => {
            "the source commits faster than the target applies: more `apply_workers` (MySQL/MariaDB), a quieter moment, or a larger `window_budget`".to_owned()
        }
        // The backlog alone would fit: what is left is the target's measured delay (how long a
        // commit takes to be applied under this load), which waiting does not shorten.
        (_, Some(apply))
            if p.backlog as f64 / apply * 1000.0 + p.fixed_ms
                <= budget.window.as_secs_f64() * 1000.0 =>
        {
            format!(
                "the backlog alone would fit, but the target applies each commit about {:.0} ms after the source under this load (its measured delay), more than the budget leaves: a quieter moment, or a larger `window_budget` (at least {:.0}ms)",
                p.catch_up_ms.unwrap_or_default(),
                (p.window_ms().unwrap_or_default() * 1.2).ceil()
            )
        }
        // Draining, but not in time: how long the rest would take at these rates.
        (Some(source), Some(apply)) if p.backlog > 0 => {
            let net = apply - source;
            let drain = p.backlog as f64 / net;
            format!(
                "the target applies faster than the source commits ({net:.0} {}/s net), so the backlog would be gone in about {drain:.0} s at these rates: a longer `gate_timeout` (at least {:.0}s), a quieter moment, or a larger `window_budget`",
                p.unit.word(),
                (budget.timeout.as_secs_f64() + drain * 1.5).ceil()
            )
        }
        _ => "a quieter moment, or a larger `window_budget`".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(committed: u64, applied: u64) -> Progress {
        Progress {
            committed,
            applied,
            unit: Unit::Transactions,
            settled: 0,
        }
    }

    #[test]
    fn the_prediction_is_the_backlog_over_the_apply_rate_once_the_span_is_long_enough() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.push(t0, p(1000, 900));
        // Too early for rates: a backlog waits.
        let early = s.predict(Duration::from_millis(10)).unwrap();
        assert_eq!((early.backlog, early.catch_up_ms), (100, None));
        // One second later the source committed 1,000 and the target applied 1,000.
        s.push(t0 + Duration::from_secs(1), p(2000, 1900));
        let later = s.predict(Duration::from_millis(10)).unwrap();
        assert_eq!(later.backlog, 100);
        assert_eq!(later.source_rate, Some(1000.0));
        assert_eq!(later.apply_rate, Some(1000.0));
        assert_eq!(later.catch_up_ms, Some(100.0));
        assert_eq!(later.window_ms(), Some(110.0));
    }

    #[test]
    fn the_targets_measured_delay_is_the_floor_of_the_prediction() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Sampler::default();
        // The source commits 1,000/s; the target applies at the same rate, 300 ms behind.
        for k in 0..11u64 {
            let committed = 1000 + k * 100;
            s.push(t0 + ms(k * 100), p(committed, committed - 300));
        }
        let delayed = s.predict(Duration::ZERO).unwrap();
        assert_eq!(delayed.backlog, 300);
        // By the rates alone: 300 / 1,000 per second = 300 ms; measured: the same.
        let got = delayed.catch_up_ms.unwrap();
        assert!((got - 300.0).abs() < 1.0, "{delayed:?}");
        // A target that applies in bursts: the backlog is small at the last sample, but what
        // was committed took 600 ms to show up applied.
        let mut s = Sampler::default();
        for k in 0..11u64 {
            let committed = 1000 + k * 100;
            let applied = if k < 10 {
                1000 + (k / 6) * 600
            } else {
                committed - 50
            };
            s.push(t0 + ms(k * 100), p(committed, applied));
        }
        let bursty = s.predict(Duration::ZERO).unwrap();
        assert_eq!(bursty.backlog, 50);
        let by_rate = 50.0 / bursty.apply_rate.unwrap() * 1000.0;
        // Its commits took 0-416 ms to show up applied, 166 ms the median.
        assert!(bursty.catch_up_ms.unwrap() > by_rate * 3.0, "{bursty:?}");
        assert!(bursty.catch_up_ms.unwrap() >= 150.0, "{bursty:?}");
        assert_eq!(bursty.delay_floor_ms, bursty.catch_up_ms, "{bursty:?}");
        assert!(
            bursty.words().contains("measured delay"),
            "{}",
            bursty.words()
        );
        // Nothing resolved yet: the rates alone.
        let mut s = Sampler::default();
        s.push(t0, p(1000, 0));
        s.push(t0 + ms(600), p(1600, 300));
        assert_eq!(s.predict(Duration::ZERO).unwrap().catch_up_ms, Some(2600.0));
    }

    #[test]
    fn a_held_applier_never_fits_and_a_caught_up_one_fits_at_once() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        s.push(t0, p(1000, 500));
        s.push(t0 + Duration::from_millis(800), p(1400, 500));
        let held = s.predict(Duration::ZERO).unwrap();
        assert_eq!(held.catch_up_ms, None, "{held:?}");
        let budget = Budget {
            window: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        };
        assert!(help(&held, budget).contains("applies nothing"));
        // Draining too slowly for the timeout: 3 MB left, 1 MB/s net, 60 s already waited.
        let draining = Prediction {
            backlog: 3_000_000,
            unit: Unit::Bytes,
            source_rate: Some(5_000_000.0),
            apply_rate: Some(6_000_000.0),
            catch_up_ms: Some(500.0),
            fixed_ms: 20.0,
            delay_floor_ms: None,
        };
        let minute = Budget {
            timeout: Duration::from_secs(60),
            ..budget
        };
        let said = help(&draining, minute);
        assert!(
            said.contains("1000000 bytes/s net")
                && said.contains("gone in about 3 s")
                && said.contains("`gate_timeout` (at least 65s)"),
            "{said}"
        );
        let outrun = Prediction {
            source_rate: Some(7_000_000.0),
            ..draining
        };
        assert!(help(&outrun, minute).contains("faster than the target applies"));
        // A backlog that would fit on its own, behind a measured delay that does not.
        let delayed = Prediction {
            backlog: 131_344,
            catch_up_ms: Some(112.0),
            delay_floor_ms: Some(112.0),
            ..draining
        };
        let said = help(&delayed, minute);
        assert!(
            said.contains("backlog alone would fit")
                && said.contains("about 112 ms after the source")
                && said.contains("at least 159ms")
                && !said.contains("gate_timeout"),
            "{said}"
        );
        let mut s = Sampler::default();
        s.push(t0, p(7, 7));
        assert_eq!(s.predict(Duration::ZERO).unwrap().catch_up_ms, Some(0.0));
    }

    #[test]
    fn servers_too_far_apart_for_the_budget_pass_once_nothing_is_left_and_the_help_says_why() {
        let budget = Budget {
            window: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        };
        let far = |catch_up_ms| Prediction {
            backlog: 0,
            unit: Unit::Bytes,
            source_rate: Some(0.0),
            apply_rate: Some(0.0),
            catch_up_ms,
            fixed_ms: 240.0,
            delay_floor_ms: None,
        };
        assert!(fits(&far(Some(0.0)), budget), "waiting cannot shorten it");
        assert!(!fits(&far(Some(5.0)), budget), "a backlog still waits");
        assert!(help(&far(Some(5.0)), budget).contains("at least 360ms"));
        let near = Prediction {
            fixed_ms: 6.0,
            ..far(Some(94.0))
        };
        assert!(fits(&near, budget));
        assert!(!fits(
            &Prediction {
                catch_up_ms: Some(95.0),
                ..near
            },
            budget
        ));
    }

    /// A pair whose backlog reads empty every sample while its own checks read its lag over
    /// the fixed ceiling every time (two readings of a moving load, moments apart).
    struct OverTheCeiling {
        checks: usize,
    }

    #[async_trait::async_trait]
    impl Window for OverTheCeiling {
        fn component(&self) -> String {
            "postgres moving".to_owned()
        }
        async fn gate(&mut self) -> Result<Gated, DbError> {
            self.checks += 1;
            Err(DbError::Behind(
                "lag is 1048608 bytes, above max_lag_bytes = 1048576".to_owned(),
            ))
        }
        async fn progress(&mut self) -> Result<Option<Progress>, DbError> {
            Ok(Some(p(7, 7)))
        }
        async fn fence(&mut self) -> Result<super::super::Fenced, DbError> {
            unreachable!("the gate never fences")
        }
        async fn catch_up(&mut self) -> Result<super::super::CaughtUp, DbError> {
            unreachable!("the gate never catches up")
        }
        async fn promote(&mut self) -> Result<super::super::Promoted, DbError> {
            unreachable!("the gate never promotes")
        }
        async fn finish(&mut self) -> super::super::Finished {
            unreachable!("the gate never finishes a window")
        }
        async fn roll_back(&mut self) -> super::super::Rollback {
            unreachable!("the gate never rolls back")
        }
        async fn state(&mut self) -> Result<super::super::PairState, DbError> {
            unreachable!("the gate reads no state")
        }
    }

    #[tokio::test]
    async fn checks_over_a_ceiling_after_a_fitting_wait_keep_waiting_until_the_timeout() {
        let mut w = OverTheCeiling { checks: 0 };
        let budget = Budget {
            window: Duration::from_millis(100),
            timeout: Duration::from_millis(600),
        };
        let mut said = Vec::new();
        let started = Instant::now();
        let got = gate(&mut w, Some(budget), &mut |s| said.push(s)).await;
        let Err(DbError::Refused(why)) = got else {
            panic!("refused at the timeout, not at the first check after a fit: {got:?}");
        };
        assert!(
            started.elapsed() >= budget.timeout,
            "{:?}",
            started.elapsed()
        );
        assert!(
            why.contains("above max_lag_bytes") && why.contains("still at gate_timeout"),
            "{why}"
        );
        assert!(
            w.checks >= 3,
            "checked again after each fitting sample: {}",
            w.checks
        );
        assert!(
            said.iter().all(|s| s.contains("waiting for the backlog")),
            "{said:?}"
        );
    }

    #[test]
    fn an_idle_residue_within_what_the_engine_calls_settled_fits() {
        let t0 = Instant::now();
        let settled = |c, a| Progress {
            committed: c,
            applied: a,
            unit: Unit::Bytes,
            settled: 4096,
        };
        let mut s = Sampler::default();
        s.push(t0, settled(10_000, 9_800));
        assert_eq!(
            s.predict(Duration::ZERO).unwrap().catch_up_ms,
            None,
            "one sample cannot tell settled from held"
        );
        s.push(t0 + Duration::from_secs(1), settled(10_000, 9_800));
        assert_eq!(s.predict(Duration::ZERO).unwrap().catch_up_ms, Some(0.0));
        // The same residue while the source commits and nothing applies: not settled.
        let mut s = Sampler::default();
        s.push(t0, settled(10_000, 9_800));
        s.push(t0 + Duration::from_secs(1), settled(12_000, 9_800));
        assert_eq!(s.predict(Duration::ZERO).unwrap().catch_up_ms, None);
    }

    #[test]
    fn the_reporting_residue_is_not_work_left() {
        let t0 = Instant::now();
        let with_residue = |c, a| Progress {
            committed: c,
            applied: a,
            unit: Unit::Bytes,
            settled: 16 * 1024,
        };
        let mut s = Sampler::default();
        s.push(t0, with_residue(100_000, 91_800));
        s.push(t0 + Duration::from_secs(1), with_residue(160_000, 151_800));
        // 8,200 bytes behind while keeping pace at 60,000 bytes/s: the residue, nothing left.
        assert_eq!(s.predict(Duration::ZERO).unwrap().catch_up_ms, Some(0.0));
        let mut s = Sampler::default();
        s.push(t0, with_residue(100_000, 0));
        s.push(t0 + Duration::from_secs(1), with_residue(160_000, 60_000));
        let behind = s.predict(Duration::ZERO).unwrap();
        let expected = (100_000 - 16 * 1024) as f64 / 60_000.0 * 1000.0;
        assert!(
            (behind.catch_up_ms.unwrap() - expected).abs() < 0.01,
            "{behind:?}"
        );
    }

    #[test]
    fn old_samples_leave_the_span() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        for i in 0..30u64 {
            s.push(t0 + Duration::from_millis(100 * i), p(i * 10, i * 10));
        }
        assert!(s.samples.len() <= 11, "{}", s.samples.len());
        let r = s.predict(Duration::ZERO).unwrap();
        assert_eq!(r.source_rate, Some(100.0));
    }
}
