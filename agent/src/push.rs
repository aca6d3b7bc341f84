//! Push monitors: the monitored system reports in with `GET`/`POST
//! /api/v1/push/<token>?status=up|down&msg=…&ping=…` (Uptime Kuma's push URLs), and the
//! monitor goes down when no push arrives within its interval plus grace.
//!
//! - [`PushHub`] knows every enabled push monitor by token: the spec's token, or one
//!   generated (random, URL-safe, 43 characters), kept in SQLite by namespace/name so it
//!   survives restarts, and handed to the runtime's live view (the monitor's status).
//!   Tokens are credentials: [`Token`] never prints, and only "generated a push token"
//!   is logged, with the monitor's name.
//! - A push becomes a [`CheckDone`] on the same channel as scheduled checks, so the state
//!   machine, incidents, SQLite and export treat it like any check result.
//! - The scheduler runs push monitors every `min(interval, 60 s)`; such a run only
//!   evaluates the [`Deadline`]. It yields a `missed` result when the deadline has passed
//!   (then again once per interval while no push comes, or when the state machine asks
//!   for a retry) and otherwise a result marked "not due" that is not recorded: pushes
//!   are the up results, missed deadlines the down ones, so uptime counts one result per
//!   interval either way and on-time pushes never flap.
//! - [`UnknownTokenLimiter`]: unknown tokens are limited per client address (a token
//!   bucket, 10 a minute), in bounded memory, so tokens cannot be guessed.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use kubekuma_crds::results::{CheckOutcome, FailureReason};
use tokio::sync::mpsc;

use crate::catalog::ObjKey;
use crate::checks::Plan;
use crate::checks::push::PushPlan;
use crate::schedule::{CheckDone, MonitorPlan};
use crate::store::{PushRow, Store};

/// Path prefix of the push endpoint; the token follows.
pub const PATH_PREFIX: &str = "/api/v1/push/";

/// Metadata key of a scheduled push evaluation that found nothing to record.
pub const NOT_DUE: &str = "pushNotDue";

/// Longest push message kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 250;

/// A push token (kept in the live view, so it lives with it).
pub use crate::state::live::Token;

/// Byte equality whose time depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `45s`, `2m 30s`, `1h 5m`, `2d 0h`.
pub fn human(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// When a push monitor is missed: pure, with the clock passed in.
///
/// The monitor is overdue `interval + grace` after its last push. Before any push, the
/// clock starts when the agent started watching the monitor, unless the last push
/// remembered from an earlier run announced its successor for after that start (then
/// that push counts, so a restart does not postpone a missed deadline). While overdue,
/// one miss is due at the deadline, then one per interval, or earlier when the state
/// machine asks for a retry.
#[derive(Clone, Debug, PartialEq)]
pub struct Deadline {
    interval: TimeDelta,
    grace: TimeDelta,
    watching_since: DateTime<Utc>,
    last_push: Option<DateTime<Utc>>,
    last_missed: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
}

impl Deadline {
    /// Start watching at `since`, knowing the last push of an earlier run, if any.
    pub fn new(
        interval: TimeDelta,
        grace: TimeDelta,
        since: DateTime<Utc>,
        last_push: Option<DateTime<Utc>>,
    ) -> Self {
        Deadline {
            interval,
            grace,
            watching_since: since,
            last_push,
            last_missed: None,
            retry_at: None,
        }
    }

    /// New interval and grace (the spec changed); pushes and misses are kept.
    pub fn reconfigure(&mut self, interval: TimeDelta, grace: TimeDelta) {
        self.interval = interval;
        self.grace = grace;
    }

    /// The last push known.
    pub fn last_push(&self) -> Option<DateTime<Utc>> {
        self.last_push
    }

    /// From when on the monitor is missed, unless a push comes.
    pub fn overdue_at(&self) -> DateTime<Utc> {
        let start = match self.last_push {
            Some(p) if p + self.interval > self.watching_since => p,
            _ => self.watching_since,
        };
        start + self.interval + self.grace
    }

    /// A push arrived at `at`.
    pub fn pushed(&mut self, at: DateTime<Utc>) {
        self.last_push = Some(self.last_push.map_or(at, |p| p.max(at)));
        self.last_missed = None;
        self.retry_at = None;
    }

    /// The state machine asks for another attempt at `at` (honoured only while overdue).
    pub fn retry(&mut self, at: DateTime<Utc>) {
        self.retry_at = Some(at);
    }

    /// Whether a miss is to be recorded at `now`; if so, it counts as recorded.
    pub fn missed(&mut self, now: DateTime<Utc>) -> bool {
        if now < self.overdue_at() {
            return false;
        }
        let due = match self.last_missed {
            None => true,
            Some(m) => now >= m + self.interval || self.retry_at.is_some_and(|r| now >= r),
        };
        if due {
            self.last_missed = Some(now);
            self.retry_at = None;
        }
        due
    }

    /// The message of a miss.
    pub fn missed_message(&self) -> String {
        let within = format!(
            "no push within {} (interval {}s + grace {}s)",
            human(self.interval + self.grace),
            self.interval.num_seconds(),
            self.grace.num_seconds()
        );
        match self.last_push {
            Some(p) => format!(
                "{within}; last push {}",
                p.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => format!(
                "{within}; no push received since {}",
                self.watching_since
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }
}

/// What one push says, from its query string.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `status=up` (the default) or `status=down`.
    pub up: bool,
    /// `msg`, cut to [`MAX_MESSAGE_CHARS`] with control characters escaped.
    pub message: Option<String>,
    /// `ping`: a latency in milliseconds measured by the pushing system.
    pub ping_ms: Option<f64>,
}

impl Report {
    /// Parse a query string; an error says which parameter is wrong.
    pub fn parse(query: Option<&str>) -> Result<Report, String> {
        let mut status = None;
        let mut message = None;
        let mut ping = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "status" if status.is_none() => status = Some(v.into_owned()),
                "msg" if message.is_none() => message = Some(v.into_owned()),
                "ping" if ping.is_none() => ping = Some(v.into_owned()),
                _ => {}
            }
        }
        let up = match status.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(s) if s.eq_ignore_ascii_case("up") => true,
            Some(s) if s.eq_ignore_ascii_case("down") => false,
            Some(_) => return Err("status must be up or down".into()),
        };
        let ping_ms = match ping.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) => match p.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
                _ => return Err("ping must be a number of milliseconds".into()),
            },
        };
        let message = message
            .filter(|m| !m.is_empty())
            .map(|m| crate::checks::excerpt(m.as_bytes(), MAX_MESSAGE_CHARS));
        Ok(Report {
            up,
            message,
            ping_ms,
        })
    }

    /// The result it stands for. Without `ping` the latency is unknown (NaN, recorded
    /// as none).
    pub fn outcome(&self) -> CheckOutcome {
        let latency = self.ping_ms.unwrap_or(f64::NAN);
        let mut o = if self.up {
            CheckOutcome::up(latency)
        } else {
            CheckOutcome::down(
                latency,
                FailureReason::Unhealthy,
                "the pushing system reported down",
            )
        };
        if let Some(m) = &self.message {
            o.message = Some(m.clone());
        }
        o
    }
}

/// Why a push was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    /// No enabled push monitor has this token.
    #[error("monitor not found or not active")]
    NotFound,
    /// The agent is shutting down.
    #[error("the agent is stopping")]
    Stopped,
    /// This agent stands by while another one leads: pushes go to the leader, which
    /// records them (a standby's view of the monitor is not the current one).
    #[error("this agent is a standby; push to the leader")]
    Standby,
}

struct Watched {
    plan: Arc<MonitorPlan>,
    deadline: Deadline,
}

#[derive(Default)]
struct Registry {
    /// Enabled push monitors by the keyed hash of their token.
    by_hash: HashMap<u64, Vec<(Token, ObjKey)>>,
    /// Enabled push monitors.
    watched: HashMap<ObjKey, Watched>,
    /// Generated tokens of every push monitor without a spec token (enabled or not).
    generated: HashMap<ObjKey, Token>,
}

/// Every push monitor's token and deadline; accepts pushes and evaluates deadlines.
pub struct PushHub {
    store: Store,
    done: mpsc::Sender<CheckDone>,
    /// Randomly keyed: token lookups reveal nothing about a token's bytes.
    hasher: RandomState,
    registry: Mutex<Registry>,
    /// Whether this agent records pushes and keeps the stored records (the leader, or
    /// an agent without election). A standby neither generates tokens nor forgets
    /// removed monitors' records: the leader does, on the shared store.
    leading: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PushHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.lock().watched.len();
        f.debug_struct("PushHub")
            .field("watched", &n)
            .finish_non_exhaustive()
    }
}

impl PushHub {
    /// A hub that keeps tokens in `store` and sends pushes to `done`.
    pub fn new(store: Store, done: mpsc::Sender<CheckDone>) -> Self {
        PushHub {
            store,
            done,
            hasher: RandomState::new(),
            registry: Mutex::new(Registry::default()),
            leading: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Whether this agent leads (see [`PushHub::set_leading`]).
    pub fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// This agent starts or stops leading. A standby answers pushes with
    /// [`PushError::Standby`]. Taking over forgets the deadlines watched so far: the next
    /// [`PushHub::apply`] starts them from the last pushes the leader before stored.
    pub fn set_leading(&self, leading: bool) {
        let was = self
            .leading
            .swap(leading, std::sync::atomic::Ordering::SeqCst);
        if leading && !was {
            self.lock().watched.clear();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the push monitors among `plans` (the whole catalog): reuse or generate their
    /// tokens, keep the deadlines of monitors already watched, start watching new ones at
    /// `now`, and forget the stored records of push monitors no longer in the catalog.
    /// Returns the generated tokens, by monitor.
    pub async fn apply(&self, plans: &[MonitorPlan], now: DateTime<Utc>) -> HashMap<ObjKey, Token> {
        let push: Vec<(&MonitorPlan, &PushPlan)> = plans
            .iter()
            .filter_map(|p| match p.check.as_ref() {
                Plan::Push(push) => Some((p, push)),
                Plan::Probe(_) => None,
            })
            .collect();
        let rows = match self.store.push_rows().await {
            Ok(rows) => Some(rows),
            Err(e) => {
                tracing::error!(error = %e, "cannot read push monitors; generated tokens wait for the next catalog change");
                None
            }
        };
        let stored: HashMap<ObjKey, (Option<Token>, Option<DateTime<Utc>>)> = rows
            .iter()
            .flatten()
            .map(|r| {
                (
                    ObjKey::new(&r.namespace, &r.name),
                    (r.generated_token.clone().map(Token), r.last_push_at),
                )
            })
            .collect();
        let spec_tokens: HashSet<&str> = push.iter().filter_map(|(_, p)| p.spec_token()).collect();
        let previous = self.lock().generated.clone();

        let mut generated = HashMap::new();
        for (plan, push) in &push {
            if push.spec_token().is_some() {
                continue;
            }
            let key = &plan.key;
            let known = match &rows {
                Some(_) => stored.get(key).and_then(|(t, _)| t.clone()),
                None => previous.get(key).cloned(),
            };
            let token = match known {
                Some(t) if !spec_tokens.contains(t.expose()) => t,
                _ if rows.is_none() || !self.leading() => continue,
                _ => {
                    let t = Token::generate();
                    if let Err(e) = self
                        .store
                        .save_push_token(&key.namespace, &key.name, t.expose())
                        .await
                    {
                        tracing::error!(monitor = %key, error = %e, "cannot store a generated push token; it changes at the next start");
                    }
                    tracing::info!(monitor = %key, "generated a push token for {key}");
                    t
                }
            };
            generated.insert(key.clone(), token);
        }

        if let Some(rows) = &rows
            && self.leading()
        {
            self.forget_removed(rows, &push).await;
        }
        self.register(&push, &generated, &stored, now);
        generated
    }

    /// Deletes the stored rows of push monitors that are no longer in the catalog.
    async fn forget_removed(&self, rows: &[PushRow], push: &[(&MonitorPlan, &PushPlan)]) {
        let present: HashSet<&ObjKey> = push.iter().map(|(p, _)| &p.key).collect();
        for r in rows {
            let key = ObjKey::new(&r.namespace, &r.name);
            if !present.contains(&key)
                && let Err(e) = self.store.delete_push_row(&r.namespace, &r.name).await
            {
                tracing::error!(monitor = %key, error = %e, "cannot forget a removed push monitor");
            }
        }
    }

    /// Watches the enabled push monitors under their tokens: a monitor watched before keeps
    /// its deadline (with the new timing), a new one starts from its last stored push.
    fn register(
        &self,
        push: &[(&MonitorPlan, &PushPlan)],
        generated: &HashMap<ObjKey, Token>,
        stored: &HashMap<ObjKey, (Option<Token>, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) {
        let mut reg = self.lock();
        let mut old = std::mem::take(&mut reg.watched);
        let mut by_hash: HashMap<u64, Vec<(Token, ObjKey)>> = HashMap::new();
        let mut watched = HashMap::new();
        for (plan, push) in push.iter().filter(|(p, _)| p.enabled) {
            let token = match push.spec_token() {
                Some(t) => Token(t.to_string()),
                None => match generated.get(&plan.key) {
                    Some(t) => t.clone(),
                    None => continue,
                },
            };
            let (interval, grace) = push.timing();
            let deadline = match old.remove(&plan.key) {
                Some(w) => {
                    let mut d = w.deadline;
                    d.reconfigure(interval, grace);
                    d
                }
                None => {
                    let last = stored.get(&plan.key).and_then(|(_, at)| *at);
                    Deadline::new(interval, grace, now, last)
                }
            };
            by_hash
                .entry(self.hasher.hash_one(token.expose()))
                .or_default()
                .push((token, plan.key.clone()));
            watched.insert(
                plan.key.clone(),
                Watched {
                    plan: Arc::new((*plan).clone()),
                    deadline,
                },
            );
        }
        reg.by_hash = by_hash;
        reg.watched = watched;
        reg.generated = generated.clone();
    }

    /// The generated token of a push monitor, if it has one.
    pub fn generated_token(&self, key: &ObjKey) -> Option<Token> {
        self.lock().generated.get(key).cloned()
    }

    /// A scheduled run of a push monitor: a `missed` result when one is due, else a
    /// result marked [`NOT_DUE`].
    pub fn evaluate(&self, key: &ObjKey, now: DateTime<Utc>) -> CheckOutcome {
        let mut reg = self.lock();
        let Some(w) = reg.watched.get_mut(key) else {
            return not_due();
        };
        if !w.deadline.missed(now) {
            return not_due();
        }
        CheckOutcome::down(f64::NAN, FailureReason::Missed, w.deadline.missed_message())
    }

    /// Whether a finished run is to be recorded: not a "not due" evaluation, and not a
    /// miss that a push overtook (it arrived after the evaluation).
    pub fn should_record(&self, done: &CheckDone) -> bool {
        if done.outcome.metadata.contains_key(NOT_DUE) {
            return false;
        }
        if matches!(done.plan.check.as_ref(), Plan::Push(_))
            && done.outcome.reason == Some(FailureReason::Missed)
        {
            let reg = self.lock();
            if let Some(w) = reg.watched.get(&done.plan.key)
                && w.deadline.last_push().is_some_and(|p| p > done.started_at)
            {
                return false;
            }
        }
        true
    }

    /// The state machine wants another attempt of a push monitor at `at`.
    pub fn retry(&self, key: &ObjKey, at: DateTime<Utc>) {
        if let Some(w) = self.lock().watched.get_mut(key) {
            w.deadline.retry(at);
        }
    }

    /// The enabled push monitor with this token.
    fn find(&self, reg: &Registry, token: &str) -> Option<ObjKey> {
        reg.by_hash
            .get(&self.hasher.hash_one(token))?
            .iter()
            .find(|(t, _)| same_bytes(t.expose().as_bytes(), token.as_bytes()))
            .map(|(_, k)| k.clone())
    }

    /// Accept a push with `token` at `now`: the deadline restarts, the push is stored as
    /// the monitor's last push and goes to the result processor like a check result.
    pub async fn receive(
        &self,
        token: &str,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<ObjKey, PushError> {
        if !self.leading() {
            return Err(PushError::Standby);
        }
        let plan = {
            let mut reg = self.lock();
            let key = self.find(&reg, token).ok_or(PushError::NotFound)?;
            let w = reg.watched.get_mut(&key).ok_or(PushError::NotFound)?;
            w.deadline.pushed(now);
            w.plan.clone()
        };
        let key = plan.key.clone();
        let store = self.store.clone();
        let stored = key.clone();
        tokio::spawn(async move {
            if let Err(e) = store
                .save_push_seen(&stored.namespace, &stored.name, now)
                .await
            {
                tracing::warn!(monitor = %stored, error = %e, "cannot store the time of a push");
            }
        });
        self.done
            .send(CheckDone {
                plan,
                outcome: report.outcome(),
                started_at: now,
                lateness: Duration::ZERO,
            })
            .await
            .map_err(|_| PushError::Stopped)?;
        Ok(key)
    }
}

fn not_due() -> CheckOutcome {
    CheckOutcome::up(f64::NAN).with(NOT_DUE, true)
}

/// Limits requests with unknown push tokens per client: a token bucket per address
/// (IPv6 by /64, the usual allocation of one client) holding `burst` tries and refilled
/// at `burst` per `period`. At most `max_tracked` addresses are remembered; when full,
/// the address closest to a full bucket is forgotten (a full bucket is the same as none).
#[derive(Debug)]
pub struct UnknownTokenLimiter {
    buckets: HashMap<IpAddr, Bucket>,
    burst: f64,
    per_second: f64,
    max_tracked: usize,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tries: f64,
    at: Instant,
}

impl Default for UnknownTokenLimiter {
    /// 10 unknown tokens a minute per address, 4096 addresses.
    fn default() -> Self {
        UnknownTokenLimiter::new(10, Duration::from_secs(60), 4096)
    }
}

impl UnknownTokenLimiter {
    /// `burst` tries per `period` per address, at most `max_tracked` addresses.
    pub fn new(burst: u32, period: Duration, max_tracked: usize) -> Self {
        let burst = f64::from(burst.max(1));
        UnknownTokenLimiter {
            buckets: HashMap::new(),
            burst,
            per_second: burst / period.as_secs_f64().max(0.001),
            max_tracked: max_tracked.max(1),
        }
    }

    fn client(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
            },
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tries + elapsed * self.per_second).min(self.burst)
    }

    /// Take one try for `ip`, before looking a token up. `Err` holds how long until the
    /// next try is allowed. A try spent on a known token is given back with
    /// [`UnknownTokenLimiter::give_back`].
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = Self::client(ip);
        let tries = match self.buckets.get(&ip) {
            Some(b) => self.refilled(*b, now),
            None => {
                self.make_room(now);
                self.burst
            }
        };
        if tries < 1.0 {
            let wait = ((1.0 - tries) / self.per_second).ceil().max(1.0);
            return Err(Duration::from_secs(wait as u64));
        }
        self.buckets.insert(
            ip,
            Bucket {
                tries: tries - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Return a try taken for a request whose token turned out known.
    pub fn give_back(&mut self, ip: IpAddr, now: Instant) {
        let ip = Self::client(ip);
        if let Some(b) = self.buckets.get(&ip).copied() {
            let tries = (self.refilled(b, now) + 1.0).min(self.burst);
            if tries >= self.burst {
                self.buckets.remove(&ip);
            } else {
                self.buckets.insert(ip, Bucket { tries, at: now });
            }
        }
    }

    /// Addresses remembered.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn make_room(&mut self, now: Instant) {
        if self.buckets.len() < self.max_tracked {
            return;
        }
        let burst = self.burst;
        let per_second = self.per_second;
        let refill = |b: &Bucket| {
            (b.tries + now.saturating_duration_since(b.at).as_secs_f64() * per_second).min(burst)
        };
        self.buckets.retain(|_, b| refill(b) < burst);
        while self.buckets.len() >= self.max_tracked {
            let fullest = self
                .buckets
                .iter()
                .max_by(|a, b| refill(a.1).total_cmp(&refill(b.1)))
                .map(|(ip, _)| *ip);
            match fullest {
                Some(ip) => {
                    self.buckets.remove(&ip);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn secs(s: i64) -> TimeDelta {
        TimeDelta::seconds(s)
    }

    /// Evaluate every `step` seconds over `[from, to)`; the times a miss was due.
    fn misses(d: &mut Deadline, from: i64, to: i64, step: i64) -> Vec<i64> {
        (from..to)
            .step_by(step as usize)
            .filter(|s| d.missed(t(*s)))
            .collect()
    }

    #[test]
    fn nothing_is_missed_before_interval_and_grace_after_the_start() {
        let mut d = Deadline::new(secs(3600), secs(300), t(0), None);
        assert_eq!(d.overdue_at(), t(3900));
        assert!(!d.missed(t(3899)));
        assert!(d.missed(t(3900)));
        assert_eq!(
            d.missed_message(),
            "no push within 1h 5m (interval 3600s + grace 300s); no push received since 2027-01-15T08:00:00Z"
        );
    }

    #[test]
    fn while_missing_one_miss_is_due_per_interval() {
        let mut d = Deadline::new(secs(3600), secs(300), t(0), None);
        // Evaluated every minute for five hours.
        assert_eq!(
            misses(&mut d, 0, 5 * 3600, 60),
            vec![3900, 3900 + 3600, 3900 + 7200, 3900 + 10_800]
        );
    }

    #[test]
    fn pushes_on_time_are_never_missed() {
        let mut d = Deadline::new(secs(60), secs(10), t(0), None);
        // Pushes every 55-69 s (late by up to 9 s of the 10 s grace), evaluated each second.
        let mut next_push = 50;
        let mut missed = Vec::new();
        for s in 0..100_000 {
            if s == next_push {
                d.pushed(t(s));
                next_push += 55 + (s * 7) % 15;
            }
            if d.missed(t(s)) {
                missed.push(s);
            }
        }
        assert!(missed.is_empty(), "missed at {missed:?}");
    }

    #[test]
    fn a_push_ends_the_misses_and_restarts_the_deadline() {
        let mut d = Deadline::new(secs(10), secs(5), t(0), None);
        assert_eq!(misses(&mut d, 0, 40, 1), vec![15, 25, 35]);
        d.pushed(t(40));
        assert_eq!(d.overdue_at(), t(55));
        assert_eq!(misses(&mut d, 41, 70, 1), vec![55, 65]);
        assert!(
            d.missed_message()
                .ends_with("last push 2027-01-15T08:00:40Z")
        );
    }

    #[test]
    fn retries_are_honoured_only_while_overdue() {
        let mut d = Deadline::new(secs(60), secs(0), t(0), None);
        // A retry asked for after a down push (not overdue) records nothing.
        d.retry(t(5));
        assert!(!d.missed(t(10)));
        assert!(d.missed(t(60)));
        // After a miss, a retry is due at its time rather than a whole interval later.
        d.retry(t(80));
        assert!(!d.missed(t(79)));
        assert!(d.missed(t(80)));
        assert!(!d.missed(t(100)));
        assert!(d.missed(t(140)));
    }

    #[test]
    fn a_remembered_push_keeps_its_deadline_across_a_restart() {
        // Restarted 10 minutes after the last push of an hourly job: missed at the
        // usual time, not an hour after the restart.
        let d = Deadline::new(secs(3600), secs(300), t(600), Some(t(0)));
        assert_eq!(d.overdue_at(), t(3900));
        // Restarted after the next push was due (it may have come while the agent was
        // away): a whole interval from the restart.
        let d = Deadline::new(secs(3600), secs(300), t(4000), Some(t(0)));
        assert_eq!(d.overdue_at(), t(4000 + 3900));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(secs(2)), "2s");
        assert_eq!(human(secs(150)), "2m 30s");
        assert_eq!(human(secs(3900)), "1h 5m");
        assert_eq!(human(secs(86_400 * 8)), "8d 0h");
    }

    #[test]
    fn reports_parse_like_uptime_kuma_push_urls() {
        assert_eq!(
            Report::parse(None).unwrap(),
            Report {
                up: true,
                message: None,
                ping_ms: None
            }
        );
        // Uptime Kuma's own push URL leaves ping empty.
        let r = Report::parse(Some("status=up&msg=OK&ping=")).unwrap();
        assert_eq!(
            (r.up, r.message.as_deref(), r.ping_ms),
            (true, Some("OK"), None)
        );
        let r = Report::parse(Some("status=DOWN&msg=disk+full%0Aat%20%2Fvar&ping=12.5")).unwrap();
        assert_eq!(
            (r.up, r.message.as_deref(), r.ping_ms),
            (false, Some("disk full\\nat /var"), Some(12.5))
        );
        let long = "x".repeat(1000);
        let r = Report::parse(Some(&format!("msg={long}"))).unwrap();
        assert_eq!(r.message.unwrap().chars().count(), MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            Report::parse(Some("status=maybe")).unwrap_err(),
            "status must be up or down"
        );
        assert_eq!(
            Report::parse(Some("ping=-1")).unwrap_err(),
            "ping must be a number of milliseconds"
        );
        assert!(Report::parse(Some("ping=NaN")).is_err());
    }

    #[test]
    fn report_outcomes() {
        let up = Report::parse(Some("ping=7")).unwrap().outcome();
        assert!(up.up && up.latency_ms == 7.0 && up.message.is_none());
        let unknown = Report::parse(None).unwrap().outcome();
        assert!(unknown.latency_ms.is_nan());
        let down = Report::parse(Some("status=down")).unwrap().outcome();
        assert_eq!(
            (down.up, down.reason, down.message.as_deref()),
            (
                false,
                Some(FailureReason::Unhealthy),
                Some("the pushing system reported down")
            )
        );
    }

    #[test]
    fn generated_tokens_are_long_url_safe_and_never_print() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn token_comparison() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
    }

    #[test]
    fn limiter_allows_a_burst_then_refills() {
        let mut l = UnknownTokenLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.take(ip, t0).is_ok());
        }
        assert_eq!(l.take(ip, t0), Err(Duration::from_secs(6)));
        // Another client is not affected.
        assert!(l.take("192.0.2.2".parse().unwrap(), t0).is_ok());
        // One try back every 6 s.
        assert!(l.take(ip, t0 + Duration::from_secs(5)).is_err());
        assert!(l.take(ip, t0 + Duration::from_secs(6)).is_ok());
        assert!(l.take(ip, t0 + Duration::from_secs(6)).is_err());
    }

    #[test]
    fn known_tokens_do_not_use_up_tries() {
        let mut l = UnknownTokenLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(l.take(ip, t0).is_ok());
            l.give_back(ip, t0);
        }
        assert_eq!(l.tracked(), 0, "a full bucket is not remembered");
    }

    #[test]
    fn limiter_memory_is_bounded_and_ipv6_counts_by_64() {
        let mut l = UnknownTokenLimiter::new(10, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.take(ip, t0);
            assert!(l.tracked() <= 100);
        }
        let mut l = UnknownTokenLimiter::default();
        for i in 0..10u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
            assert!(l.take(ip, t0).is_ok());
        }
        let other_host_same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 9, 9, 9, 9));
        assert!(l.take(other_host_same_64, t0).is_err());
        let other_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
        assert!(l.take(other_64, t0).is_ok());
    }
}
