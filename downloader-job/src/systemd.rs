//! The host's systemd behind [`Systemd`]: the few manager calls the job makes, and the real
//! implementation over the host's system bus ([`DbusSystemd`], zbus on tokio).
//!
//! The job talks to the host's systemd, not to anything in its own container: the host's bus
//! socket is bind-mounted into the job (`/host/run/dbus/system_bus_socket`) and the job runs
//! as root, which the bus policy lets manage units.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use baton_systemd_bus::{Bus, BusError};
pub use baton_systemd_bus::{JobRef, UnitStatus};

use crate::error::JobError;

/// The systemd manager calls the job makes.
pub trait Systemd: Send + Sync {
    /// `daemon-reload`.
    fn reload(&self) -> impl Future<Output = Result<(), JobError>> + Send;
    /// The unit file's state (`enabled`, `disabled`, `static`, …).
    fn unit_file_state(&self, unit: &str) -> impl Future<Output = Result<String, JobError>> + Send;
    /// Enables the unit file (`systemctl enable`, without the reload).
    fn enable(&self, unit: &str) -> impl Future<Output = Result<(), JobError>> + Send;
    /// The unit's current state.
    fn status(&self, unit: &str) -> impl Future<Output = Result<UnitStatus, JobError>> + Send;
    /// Clears a failed state (and the start rate limit).
    fn reset_failed(&self, unit: &str) -> impl Future<Output = Result<(), JobError>> + Send;
    /// Queues a start job.
    fn start(&self, unit: &str) -> impl Future<Output = Result<JobRef, JobError>> + Send;
    /// Queues a restart job (starts the unit if it is not running).
    fn restart(&self, unit: &str) -> impl Future<Output = Result<JobRef, JobError>> + Send;
    /// Whether the job is still queued or running.
    fn job_pending(&self, job: &JobRef) -> impl Future<Output = Result<bool, JobError>> + Send;
}

/// systemd over a D-Bus socket (the shared `baton-systemd-bus` client).
#[derive(Debug, Clone)]
pub struct DbusSystemd(Bus);

impl DbusSystemd {
    /// Connects to the system bus listening on `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, JobError> {
        Bus::connect(socket).await.map(Self).map_err(job_error)
    }
}

fn job_error(e: BusError) -> JobError {
    match e {
        BusError::Connect { socket, source } => {
            JobError::io(&socket, "connect to the host's system bus", source)
        }
        BusError::Call {
            socket,
            method,
            unit,
            source,
        } => JobError::Systemd {
            socket,
            method,
            unit,
            source,
        },
    }
}

impl Systemd for DbusSystemd {
    async fn reload(&self) -> Result<(), JobError> {
        self.0.reload().await.map_err(job_error)
    }

    async fn unit_file_state(&self, unit: &str) -> Result<String, JobError> {
        self.0.unit_file_state(unit).await.map_err(job_error)
    }

    async fn enable(&self, unit: &str) -> Result<(), JobError> {
        self.0.enable(unit).await.map_err(job_error)
    }

    async fn status(&self, unit: &str) -> Result<UnitStatus, JobError> {
        self.0.status(unit).await.map_err(job_error)
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), JobError> {
        self.0.reset_failed(unit).await.map_err(job_error)
    }

    async fn start(&self, unit: &str) -> Result<JobRef, JobError> {
        self.0.start(unit).await.map_err(job_error)
    }

    async fn restart(&self, unit: &str) -> Result<JobRef, JobError> {
        self.0.restart(unit).await.map_err(job_error)
    }

    async fn job_pending(&self, job: &JobRef) -> Result<bool, JobError> {
        self.0.job_pending(job).await.map_err(job_error)
    }
}

/// Waits until `job` has finished and `unit` is active, polling every `poll`; on timeout
/// returns the unit's last status as the error.
pub async fn wait_active<S: Systemd>(
    systemd: &S,
    unit: &str,
    job: &JobRef,
    timeout: Duration,
    poll: Duration,
) -> Result<Result<UnitStatus, UnitStatus>, JobError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut job_done = false;
    loop {
        if !job_done {
            job_done = !systemd.job_pending(job).await?;
        }
        let status = systemd.status(unit).await?;
        if job_done && status.is_active() {
            return Ok(Ok(status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(status));
        }
        tokio::time::sleep(poll).await;
    }
}

/// A recording fake of the host's systemd.
#[cfg(test)]
pub mod testing {
    use std::sync::Mutex;

    use super::*;

    /// What the fake does and remembers.
    #[derive(Debug, Default)]
    pub struct FakeState {
        /// Calls, as `Method unit`.
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
    }

    /// Microseconds since the epoch, now.
    pub fn now_usec() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }

    /// Records calls; `enable` enables, `start`/`restart` activate (if `starts_ok`).
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

        /// The calls made, in order.
        pub fn calls(&self) -> Vec<String> {
            self.state.lock().unwrap().calls.clone()
        }

        /// Forgets the recorded calls.
        pub fn clear(&self) {
            self.state.lock().unwrap().calls.clear();
        }

        fn record(&self, call: String) {
            self.state.lock().unwrap().calls.push(call);
        }

        fn activate(&self) {
            let mut s = self.state.lock().unwrap();
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
        async fn reload(&self) -> Result<(), JobError> {
            self.record("Reload".into());
            Ok(())
        }
        async fn unit_file_state(&self, unit: &str) -> Result<String, JobError> {
            self.record(format!("GetUnitFileState {unit}"));
            Ok(self.state.lock().unwrap().file_state.clone())
        }
        async fn enable(&self, unit: &str) -> Result<(), JobError> {
            self.record(format!("EnableUnitFiles {unit}"));
            self.state.lock().unwrap().file_state = "enabled".into();
            Ok(())
        }
        async fn status(&self, unit: &str) -> Result<UnitStatus, JobError> {
            let _ = unit;
            let s = self.state.lock().unwrap();
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
        async fn reset_failed(&self, unit: &str) -> Result<(), JobError> {
            self.record(format!("ResetFailedUnit {unit}"));
            Ok(())
        }
        async fn start(&self, unit: &str) -> Result<JobRef, JobError> {
            self.record(format!("StartUnit {unit}"));
            self.activate();
            Ok(JobRef("/org/freedesktop/systemd1/job/1".into()))
        }
        async fn restart(&self, unit: &str) -> Result<JobRef, JobError> {
            self.record(format!("RestartUnit {unit}"));
            self.activate();
            Ok(JobRef("/org/freedesktop/systemd1/job/2".into()))
        }
        async fn job_pending(&self, _job: &JobRef) -> Result<bool, JobError> {
            Ok(false)
        }
    }
}
