//! A recording fake of the host's systemd, for unit tests of the agent and the downloader
//! job (behind the `fake` feature, which only their dev-dependencies turn on).

use std::sync::{Mutex, MutexGuard};

use crate::{BusError, JobRef, Systemd, UnitStatus};

/// What the fake does and remembers.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Calls, as `Method unit` (D-Bus method names: `RestartUnit baton-echo.service`).
    pub calls: Vec<String>,
    /// The unit file state reported.
    pub file_state: String,
    /// The unit's state.
    pub active: String,
    /// Whether a start/restart makes the unit active (else it stays `activating`).
    pub starts_ok: bool,
    /// Start and restart calls so far.
    pub starts: usize,
    /// `ActiveEnterTimestamp` reported.
    pub active_enter_usec: u64,
    /// Polls of a stop job that report it still pending, before it finishes.
    pub stop_pending_polls: usize,
    /// Restart calls that find systemd gone (a transient error), before one is answered.
    pub restarts_unanswered: usize,
}

/// Microseconds since the epoch, now.
pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Records calls; `enable` enables, `start`/`restart` activate (if `starts_ok`), `stop`
/// deactivates. Every unit shares one state.
#[derive(Debug)]
pub struct FakeSystemd {
    /// Shared state, inspected by the tests.
    pub state: Mutex<FakeState>,
    /// Decides whether a start succeeds, given the number of start/restart calls so far
    /// (from 1); `None` uses `starts_ok`.
    pub start_ok_at: Option<fn(usize) -> bool>,
}

impl Default for FakeSystemd {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSystemd {
    /// A host where the unit is new (disabled, inactive) and starts fine.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(FakeState {
                file_state: "disabled".into(),
                active: "inactive".into(),
                starts_ok: true,
                ..FakeState::default()
            }),
            start_ok_at: None,
        }
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A poisoned lock only happens after a test already panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls made, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear(&self) {
        self.lock().calls.clear();
    }

    fn record(&self, call: String) {
        self.lock().calls.push(call);
    }

    fn activate(&self) {
        let mut s = self.lock();
        s.starts += 1;
        let ok = match self.start_ok_at {
            Some(f) => f(s.starts),
            None => s.starts_ok,
        };
        s.active = if ok { "active" } else { "activating" }.into();
        if ok {
            s.active_enter_usec = now_usec();
        }
    }
}

impl Systemd for FakeSystemd {
    async fn reload(&self) -> Result<(), BusError> {
        self.record("Reload".into());
        Ok(())
    }
    async fn unit_file_state(&self, unit: &str) -> Result<String, BusError> {
        self.record(format!("GetUnitFileState {unit}"));
        Ok(self.lock().file_state.clone())
    }
    async fn enable(&self, unit: &str) -> Result<(), BusError> {
        self.record(format!("EnableUnitFiles {unit}"));
        self.lock().file_state = "enabled".into();
        Ok(())
    }
    async fn disable(&self, unit: &str) -> Result<(), BusError> {
        self.record(format!("DisableUnitFiles {unit}"));
        self.lock().file_state = "disabled".into();
        Ok(())
    }
    async fn status(&self, _unit: &str) -> Result<UnitStatus, BusError> {
        let s = self.lock();
        Ok(UnitStatus {
            active_state: s.active.clone(),
            sub_state: if s.active == "active" {
                "running"
            } else {
                "auto-restart"
            }
            .into(),
            active_enter_usec: s.active_enter_usec,
        })
    }
    async fn reset_failed(&self, unit: &str) -> Result<(), BusError> {
        self.record(format!("ResetFailedUnit {unit}"));
        Ok(())
    }
    async fn start(&self, unit: &str) -> Result<JobRef, BusError> {
        self.record(format!("StartUnit {unit}"));
        self.activate();
        Ok(JobRef("/org/freedesktop/systemd1/job/1".into()))
    }
    async fn restart(&self, unit: &str) -> Result<JobRef, BusError> {
        self.record(format!("RestartUnit {unit}"));
        {
            let mut s = self.lock();
            if s.restarts_unanswered > 0 {
                s.restarts_unanswered -= 1;
                return Err(BusError::Connect {
                    socket: "/run/dbus/system_bus_socket".into(),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                });
            }
        }
        self.activate();
        Ok(JobRef("/org/freedesktop/systemd1/job/2".into()))
    }
    async fn stop(&self, unit: &str) -> Result<JobRef, BusError> {
        self.record(format!("StopUnit {unit}"));
        self.lock().active = "inactive".into();
        Ok(JobRef("/org/freedesktop/systemd1/job/3".into()))
    }
    async fn reboot(&self) -> Result<(), BusError> {
        self.record("StartUnit reboot.target".into());
        Ok(())
    }
    async fn job_pending(&self, _job: &JobRef) -> Result<bool, BusError> {
        let mut s = self.lock();
        if s.stop_pending_polls > 0 {
            s.stop_pending_polls -= 1;
            return Ok(true);
        }
        Ok(false)
    }
}
