//! Rate limits: a token bucket per key (a user, an address). A bucket holds `burst` tokens and
//! refills at `per_second`; a request takes one, or is refused with the time until one is back.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A rate: `per_second` on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Requests per second, on average.
    pub per_second: f64,
    /// Requests at once, after a quiet spell.
    pub burst: f64,
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// Parses `<per second>` or `<per second>/<burst>` (`10/20`); the burst defaults to twice
    /// the rate, and at least 1.
    fn from_str(s: &str) -> Result<Rate, String> {
        let (rate, burst) = s.split_once('/').map_or((s, None), |(r, b)| (r, Some(b)));
        let per_second: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a rate: write <per second>[/<burst>], such as 10/20"))?;
        let burst: f64 = match burst {
            Some(b) => b
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} has no number after the `/`"))?,
            None => (per_second * 2.0).max(1.0),
        };
        if !(per_second.is_finite() && per_second > 0.0 && burst.is_finite() && burst >= 1.0) {
            return Err(format!(
                "{s:?}: the rate must be above 0 and the burst at least 1"
            ));
        }
        Ok(Rate { per_second, burst })
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by key. Keys whose bucket has refilled are forgotten on the way, so the map holds
/// only the keys active within the last `burst / per_second` seconds.
pub struct Limiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
    /// When the map was last swept of full buckets.
    swept: Mutex<Instant>,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// A limiter of `rate` per key.
    pub fn new(rate: Rate) -> Limiter<K> {
        Limiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Takes a token of `key`'s bucket at `now`, or says how long until one is back.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let refill = Duration::from_secs_f64(self.rate.burst / self.rate.per_second);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*swept) >= refill.max(Duration::from_secs(1)) {
                buckets.retain(|_, b| now.duration_since(b.at) < refill);
                *swept = now;
            }
        }
        let b = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate.per_second))
        }
    }

    /// Keys with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_with_the_wait_until_the_next() {
        let l = Limiter::new("2/3".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(&"u", t0), Ok(()));
        }
        let wait = l.take(&"u", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(l.take(&"other", t0).is_ok(), "keys are apart");
        assert!(l.take(&"u", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take(&"u", t0 + Duration::from_millis(500)).is_err());
        // Never more than the burst, however long the quiet.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.take(&"u", later).is_ok());
        }
        assert!(l.take(&"u", later).is_err());
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let l = Limiter::new("10/10".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..100 {
            l.take(&i, t0).unwrap();
        }
        assert_eq!(l.len(), 100);
        l.take(&0, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn rates_parse_with_a_default_burst_and_refuse_nonsense() {
        assert_eq!(
            "10".parse::<Rate>(),
            Ok(Rate {
                per_second: 10.0,
                burst: 20.0
            })
        );
        assert_eq!(
            "0.5".parse::<Rate>(),
            Ok(Rate {
                per_second: 0.5,
                burst: 1.0
            })
        );
        assert_eq!(
            "5/7".parse::<Rate>(),
            Ok(Rate {
                per_second: 5.0,
                burst: 7.0
            })
        );
        for bad in ["", "x", "0", "-1", "5/0", "5/x", "inf"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
