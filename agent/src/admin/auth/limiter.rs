//! Sliding-window counters for login attempts: per client address, per username and
//! address, and per username.
//! Bounded: beyond `max_keys` tracked keys, expired ones are dropped first, then the
//! least recently active one.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// At most `limit` events per `period` for each key.
#[derive(Debug)]
pub(crate) struct Window<K> {
    limit: usize,
    period: Duration,
    max_keys: usize,
    events: HashMap<K, VecDeque<Instant>>,
}

impl<K: Eq + Hash + Clone> Window<K> {
    pub(crate) fn new(limit: u32, period: Duration, max_keys: usize) -> Self {
        Window {
            limit: usize::try_from(limit).unwrap_or(usize::MAX).max(1),
            period,
            max_keys: max_keys.max(1),
            events: HashMap::new(),
        }
    }

    fn prune(q: &mut VecDeque<Instant>, period: Duration, now: Instant) {
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= period)
        {
            q.pop_front();
        }
    }

    /// `Err(wait)` while `key` has used up its events; the time until one frees up.
    pub(crate) fn check(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        let Some(q) = self.events.get_mut(key) else {
            return Ok(());
        };
        Self::prune(q, self.period, now);
        if q.len() < self.limit {
            return Ok(());
        }
        let oldest = q.front().copied().unwrap_or(now);
        Err(self
            .period
            .saturating_sub(now.saturating_duration_since(oldest)))
    }

    /// Count an event of `key`.
    pub(crate) fn record(&mut self, key: &K, now: Instant) {
        if !self.events.contains_key(key) && self.events.len() >= self.max_keys {
            self.make_room(now);
        }
        let q = self.events.entry(key.clone()).or_default();
        Self::prune(q, self.period, now);
        q.push_back(now);
        while q.len() > self.limit {
            q.pop_front();
        }
    }

    /// How many events `key` has in the current window.
    pub(crate) fn count(&mut self, key: &K, now: Instant) -> usize {
        match self.events.get_mut(key) {
            Some(q) => {
                Self::prune(q, self.period, now);
                q.len()
            }
            None => 0,
        }
    }

    /// `check`, then `record` when allowed.
    #[cfg(test)]
    pub(crate) fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        self.check(key, now)?;
        self.record(key, now);
        Ok(())
    }

    /// Undo the latest event of `key` (a successful login does not count).
    pub(crate) fn give_back(&mut self, key: &K) {
        if let Some(q) = self.events.get_mut(key) {
            q.pop_back();
            if q.is_empty() {
                self.events.remove(key);
            }
        }
    }

    /// Forget `key` (a successful login clears the username's failures).
    pub(crate) fn clear(&mut self, key: &K) {
        self.events.remove(key);
    }

    fn make_room(&mut self, now: Instant) {
        let period = self.period;
        self.events.retain(|_, q| {
            Self::prune(q, period, now);
            !q.is_empty()
        });
        if self.events.len() >= self.max_keys {
            let stalest = self
                .events
                .iter()
                .min_by_key(|(_, q)| q.back().copied())
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.events.remove(&k);
            }
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.events.len()
    }
}

/// The key of a client address: IPv4 addresses as they are, IPv6 addresses by their /64
/// (one host usually has a whole /64).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window() {
        let t0 = Instant::now();
        let mut w: Window<&str> = Window::new(3, Duration::from_secs(60), 100);
        for _ in 0..3 {
            assert!(w.take(&"a", t0).is_ok());
        }
        let wait = w.take(&"a", t0 + Duration::from_secs(10));
        assert_eq!(wait, Err(Duration::from_secs(50)));
        assert!(w.take(&"b", t0).is_ok());
        assert!(w.take(&"a", t0 + Duration::from_secs(60)).is_ok());
        w.give_back(&"a");
        assert!(w.take(&"a", t0 + Duration::from_secs(61)).is_ok());
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(61)), 1);
        w.clear(&"a");
        assert!(w.check(&"a", t0 + Duration::from_secs(61)).is_ok());
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(61)), 0);
    }

    #[test]
    fn bounded_number_of_keys() {
        let t0 = Instant::now();
        let mut w: Window<u32> = Window::new(1, Duration::from_secs(60), 10);
        for i in 0..100 {
            w.record(&i, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(w.keys() <= 10);
        // The most recent keys are kept.
        assert!(w.check(&99, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn ipv6_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:ffff::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(client_key(a), client_key(b));
        let v4: IpAddr = "::ffff:192.0.2.1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(client_key(v4), IpAddr::from([192, 0, 2, 1]));
    }
}
