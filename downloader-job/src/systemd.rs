//! The host's systemd behind [`Systemd`]: the few manager calls the job makes, and the real
//! implementation over the host's system bus ([`DbusSystemd`], zbus on tokio).
//!
//! The job talks to the host's systemd, not to anything in its own container: the host's bus
//! socket is bind-mounted into the job (`/host/run/dbus/system_bus_socket`) and the job runs
//! as root, which the bus policy lets manage units.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

use crate::error::JobError;

const SYSTEMD_SERVICE: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const JOB_INTERFACE: &str = "org.freedesktop.systemd1.Job";
/// How long one D-Bus call may take before the job gives up on the host's systemd.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A unit's `ActiveState` and `SubState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// `active`, `activating`, `inactive`, `failed`, …
    pub active_state: String,
    /// The unit type's own state (`running`, `auto-restart`, `dead`, …).
    pub sub_state: String,
    /// When the unit last entered `active` (`ActiveEnterTimestamp`, µs since the epoch; 0 if
    /// never).
    pub active_enter_usec: u64,
}

impl UnitStatus {
    /// `ActiveState` is `active`.
    pub fn is_active(&self) -> bool {
        self.active_state == "active"
    }
}

/// A job systemd queued (its object path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef(pub String);

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

/// systemd over a D-Bus socket.
#[derive(Debug, Clone)]
pub struct DbusSystemd {
    conn: zbus::Connection,
    socket: PathBuf,
}

impl DbusSystemd {
    /// Connects to the system bus listening on `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, JobError> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| JobError::io(socket, "connect to the host's system bus", e))?;
        let conn = tokio::time::timeout(
            CALL_TIMEOUT,
            zbus::connection::Builder::unix_stream(stream).build(),
        )
        .await
        .map_err(|_| {
            JobError::io(
                socket,
                "connect to the host's system bus",
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            )
        })?
        .map_err(|source| JobError::Systemd {
            socket: socket.to_owned(),
            method: "Hello",
            unit: String::new(),
            source,
        })?;
        Ok(Self {
            conn,
            socket: socket.to_owned(),
        })
    }

    fn error(&self, method: &'static str, unit: &str) -> impl FnOnce(zbus::Error) -> JobError {
        let socket = self.socket.clone();
        let unit = unit.to_owned();
        move |source| JobError::Systemd {
            socket,
            method,
            unit,
            source,
        }
    }

    async fn proxy(
        &self,
        path: &str,
        interface: &'static str,
    ) -> zbus::Result<zbus::Proxy<'static>> {
        zbus::proxy::Builder::new(&self.conn)
            .destination(SYSTEMD_SERVICE)?
            .path(path.to_owned())?
            .interface(interface)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// Calls a manager method, bounded by [`CALL_TIMEOUT`].
    async fn manager_call<B, R>(
        &self,
        method: &'static str,
        unit: &str,
        body: &B,
    ) -> Result<R, JobError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType + Sync,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let call = async {
            let proxy = self.proxy(MANAGER_PATH, MANAGER_INTERFACE).await?;
            proxy.call(method, body).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(r) => r.map_err(self.error(method, unit)),
            Err(_) => Err(self.error(method, unit)(zbus::Error::InputOutput(
                std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
            ))),
        }
    }

    async fn unit_property<T>(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        name: &'static str,
    ) -> Result<T, JobError>
    where
        T: TryFrom<zbus::zvariant::OwnedValue>,
        T::Error: Into<zbus::Error>,
    {
        let get = async {
            let proxy = self.proxy(path.as_str(), UNIT_INTERFACE).await?;
            proxy.get_property::<T>(name).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, get).await {
            Ok(r) => r.map_err(self.error("Get", unit)),
            Err(_) => Err(self.error("Get", unit)(zbus::Error::InputOutput(
                std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
            ))),
        }
    }
}

impl Systemd for DbusSystemd {
    async fn reload(&self) -> Result<(), JobError> {
        self.manager_call::<_, ()>("Reload", "", &()).await
    }

    async fn unit_file_state(&self, unit: &str) -> Result<String, JobError> {
        self.manager_call("GetUnitFileState", unit, &(unit,)).await
    }

    async fn enable(&self, unit: &str) -> Result<(), JobError> {
        // (files, runtime, force) -> (carries_install_info, changes)
        let _: (bool, Vec<(String, String, String)>) = self
            .manager_call("EnableUnitFiles", unit, &(vec![unit], false, true))
            .await?;
        Ok(())
    }

    async fn status(&self, unit: &str) -> Result<UnitStatus, JobError> {
        let path: OwnedObjectPath = self.manager_call("LoadUnit", unit, &(unit,)).await?;
        Ok(UnitStatus {
            active_state: self.unit_property(unit, &path, "ActiveState").await?,
            sub_state: self.unit_property(unit, &path, "SubState").await?,
            active_enter_usec: self
                .unit_property(unit, &path, "ActiveEnterTimestamp")
                .await?,
        })
    }

    async fn reset_failed(&self, unit: &str) -> Result<(), JobError> {
        self.manager_call::<_, ()>("ResetFailedUnit", unit, &(unit,))
            .await
    }

    async fn start(&self, unit: &str) -> Result<JobRef, JobError> {
        let job: OwnedObjectPath = self
            .manager_call("StartUnit", unit, &(unit, "replace"))
            .await?;
        Ok(JobRef(job.as_str().to_owned()))
    }

    async fn restart(&self, unit: &str) -> Result<JobRef, JobError> {
        let job: OwnedObjectPath = self
            .manager_call("RestartUnit", unit, &(unit, "replace"))
            .await?;
        Ok(JobRef(job.as_str().to_owned()))
    }

    async fn job_pending(&self, job: &JobRef) -> Result<bool, JobError> {
        let proxy = self
            .proxy(&job.0, JOB_INTERFACE)
            .await
            .map_err(self.error("Get", &job.0))?;
        // A finished job's object is gone: reading its State fails with UnknownObject.
        match tokio::time::timeout(CALL_TIMEOUT, proxy.get_property::<String>("State")).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => Ok(false),
            Err(_) => Err(self.error("Get", &job.0)(zbus::Error::InputOutput(
                std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
            ))),
        }
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
