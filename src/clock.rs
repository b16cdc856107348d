//! Time sources: wall-clock time for token claims, monotonic time for caches and cooldowns.
//!
//! Every time-dependent decision in this crate reads a [`Clock`], so tests can move time
//! deterministically with [`ManualClock`] instead of sleeping.
//!
//! ```
//! use std::time::Duration;
//! use tower_mcp_auth::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new(1_700_000_000);
//! let before = clock.monotonic();
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(clock.unix_time(), 1_700_000_030);
//! assert_eq!(clock.monotonic() - before, Duration::from_secs(30));
//!
//! // Moving the wall clock back does not move monotonic time.
//! clock.set_unix_time(1_600_000_000);
//! assert_eq!(clock.monotonic() - before, Duration::from_secs(30));
//! ```

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Seconds since the Unix epoch (wall clock), used for `exp`, `nbf` and `iat`.
    fn unix_time(&self) -> i64;

    /// Time elapsed since an arbitrary fixed origin; never goes backwards. Used for cache
    /// lifetimes, refresh cooldowns and back-off, so that wall-clock jumps cannot lock a
    /// refresh out or keep stale keys forever.
    fn monotonic(&self) -> Duration;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_time(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }

    fn monotonic(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that only moves when told to. For tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    unix: AtomicI64,
    mono_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock reading `unix_time` seconds since the epoch.
    pub fn new(unix_time: i64) -> Self {
        Self { unix: AtomicI64::new(unix_time), mono_nanos: AtomicU64::new(0) }
    }

    /// A clock starting at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.unix_time())
    }

    /// Moves both the wall clock and the monotonic clock forward.
    pub fn advance(&self, by: Duration) {
        self.unix.fetch_add(i64::try_from(by.as_secs()).unwrap_or(i64::MAX), Ordering::SeqCst);
        self.mono_nanos.fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Sets the wall clock only (it may go backwards); monotonic time is untouched.
    pub fn set_unix_time(&self, unix_time: i64) {
        self.unix.store(unix_time, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_time(&self) -> i64 {
        self.unix.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono_nanos.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn unix_time(&self) -> i64 {
        (**self).unix_time()
    }

    fn monotonic(&self) -> Duration {
        (**self).monotonic()
    }
}

/// The clock type stored inside verifiers.
pub(crate) type SharedClock = Arc<dyn Clock>;

pub(crate) fn system() -> SharedClock {
    Arc::new(SystemClock)
}
