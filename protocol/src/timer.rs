//! Sleeps that wake a process once.
//!
//! tokio's timer wheel wakes a parked runtime at the start of each coarser slot on the way
//! to a deadline: a 5 s sleep is up to three wake-ups (the start of its 4 s slot, of its
//! 64 ms slot, then the deadline), a minute's as many. For a process that sleeps nearly all
//! the time — a host's idle agent, between its lease refreshes, watchdog pings and token
//! reads — that is most of what it costs the host. A `timerfd` of its own wakes it once, at
//! the deadline, at the price of a file descriptor while it sleeps: [`Timer::Os`] is for a
//! process with a few such sleeps, not for one running thousands side by side (the
//! benchmark's simulated agents).

use std::io;
use std::time::Duration;

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// What a sleep waits on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timer {
    /// tokio's timer wheel: no file descriptor; up to three wake-ups a sleep.
    #[default]
    Runtime,
    /// A `timerfd` of the sleep's own: one wake-up (tokio's wheel if one cannot be made).
    Os,
}

impl Timer {
    /// Sleeps for `duration`.
    pub async fn sleep(self, duration: Duration) {
        if self == Timer::Os {
            match os_sleep(duration).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(%error, "timerfd unavailable; sleeping on tokio's timer")
                }
            }
        }
        tokio::time::sleep(duration).await;
    }
}

/// Sleeps on a one-shot monotonic `timerfd`. The errors come from making and arming the
/// timer (no descriptor left, say), before any of `duration` has passed: the caller then
/// sleeps all of it on tokio's timer.
async fn os_sleep(duration: Duration) -> io::Result<()> {
    if duration.is_zero() {
        // A zero `it_value` disarms a timer instead of firing it.
        tokio::task::yield_now().await;
        return Ok(());
    }
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let value = Timespec::try_from(duration)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "sleep too long for a timerfd"))?;
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: zero,
            it_value: value,
        },
    )?;
    // Deprecated as unsound for a type whose `as_raw_fd` may change or close; an `OwnedFd`
    // holds one descriptor open until it is dropped, the condition the unsafe replacement
    // asks its caller to promise (this workspace forbids `unsafe`).
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
    loop {
        let mut ready = fd.readable().await?;
        // The expiration count (8 bytes); would-block means the readiness was stale.
        let mut count = [0u8; 8];
        match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut count)?)) {
            Ok(read) => return read.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn an_os_sleep_waits_on_a_timerfd_for_its_duration() {
        for duration in [Duration::ZERO, Duration::from_millis(30)] {
            let started = Instant::now();
            // Not through `Timer::sleep`, whose fallback would hide a failing timerfd.
            os_sleep(duration).await.expect("timerfd sleep");
            assert!(started.elapsed() >= duration, "{duration:?}");
        }
    }
}
