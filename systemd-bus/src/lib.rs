//! The host's systemd: the one [`Systemd`] trait for the manager calls Baton makes —
//! reload, enable/disable, start/restart/stop, unit status, jobs, reboot — its real
//! implementation over the system bus ([`Bus`], D-Bus with zbus on tokio), and a recording
//! fake ([`fake::FakeSystemd`]) for unit tests.
//!
//! Shared by the downloader job (which reaches the host's bus through a bind-mounted socket
//! from a sibling container) and the agent (on the host itself). Both run as root, which the
//! bus policy lets manage units.

#[cfg(any(test, feature = "fake"))]
pub mod fake;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

/// The system bus socket on a host.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

const SYSTEMD_SERVICE: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const JOB_INTERFACE: &str = "org.freedesktop.systemd1.Job";
/// How long one D-Bus call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The socket could not be reached.
    #[error("{socket}: connect to the host's system bus: {source}")]
    Connect {
        /// The D-Bus socket.
        socket: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A call failed or timed out.
    #[error("{socket}: systemd {method} {unit}: {source}")]
    Call {
        /// The D-Bus socket.
        socket: PathBuf,
        /// The D-Bus method.
        method: &'static str,
        /// The unit (or job) it was about.
        unit: String,
        /// The D-Bus error.
        source: zbus::Error,
    },
}

impl BusError {
    /// The bus or systemd went away mid-call — a reboot or shutdown under way, a daemon
    /// re-exec — rather than refusing it: worth asking again shortly, not a verdict on the
    /// unit.
    pub fn is_transient(&self) -> bool {
        match self {
            BusError::Connect { .. } => true,
            BusError::Call { source, .. } => match source {
                zbus::Error::MethodError(name, _, _) => matches!(
                    name.as_str(),
                    "org.freedesktop.DBus.Error.NoReply"
                        | "org.freedesktop.DBus.Error.Disconnected"
                        | "org.freedesktop.DBus.Error.ServiceUnknown"
                ),
                zbus::Error::InputOutput(_) => true,
                _ => false,
            },
        }
    }
}

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

/// The systemd manager calls Baton makes. [`Bus`] is the real one; [`fake::FakeSystemd`]
/// records calls for tests.
pub trait Systemd: Send + Sync {
    /// `daemon-reload`.
    fn reload(&self) -> impl Future<Output = Result<(), BusError>> + Send;
    /// The unit file's state (`enabled`, `disabled`, `static`, …).
    fn unit_file_state(&self, unit: &str) -> impl Future<Output = Result<String, BusError>> + Send;
    /// Enables the unit file (`systemctl enable`, without the reload).
    fn enable(&self, unit: &str) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Disables the unit file (`systemctl disable`, without the reload).
    fn disable(&self, unit: &str) -> impl Future<Output = Result<(), BusError>> + Send;
    /// The unit's current state.
    fn status(&self, unit: &str) -> impl Future<Output = Result<UnitStatus, BusError>> + Send;
    /// Clears a failed state (and the start rate limit).
    fn reset_failed(&self, unit: &str) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Queues a start job.
    fn start(&self, unit: &str) -> impl Future<Output = Result<JobRef, BusError>> + Send;
    /// Queues a restart job (starts the unit if it is not running).
    fn restart(&self, unit: &str) -> impl Future<Output = Result<JobRef, BusError>> + Send;
    /// Queues a stop job.
    fn stop(&self, unit: &str) -> impl Future<Output = Result<JobRef, BusError>> + Send;
    /// Asks systemd to reboot the host (`systemctl reboot`).
    fn reboot(&self) -> impl Future<Output = Result<(), BusError>> + Send;
    /// Whether the job is still queued or running.
    fn job_pending(&self, job: &JobRef) -> impl Future<Output = Result<bool, BusError>> + Send;
}

/// Waits until `job` has finished and `unit` is active, polling every `poll`; on timeout
/// returns the unit's last status as the inner error.
pub async fn wait_active<S: Systemd + ?Sized>(
    systemd: &S,
    unit: &str,
    job: &JobRef,
    timeout: Duration,
    poll: Duration,
) -> Result<Result<UnitStatus, UnitStatus>, BusError> {
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

/// A connection to a host's systemd.
#[derive(Debug, Clone)]
pub struct Bus {
    conn: zbus::Connection,
    socket: PathBuf,
}

fn timed_out() -> zbus::Error {
    zbus::Error::InputOutput(std::io::Error::from(std::io::ErrorKind::TimedOut).into())
}

impl Bus {
    /// Connects to the system bus listening on `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, BusError> {
        let connect_err = |source| BusError::Connect {
            socket: socket.to_owned(),
            source,
        };
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(connect_err)?;
        let conn = tokio::time::timeout(
            CALL_TIMEOUT,
            zbus::connection::Builder::unix_stream(stream).build(),
        )
        .await
        .map_err(|_| connect_err(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
        .map_err(|source| BusError::Call {
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

    /// The socket this connection uses.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn error(&self, method: &'static str, unit: &str) -> impl FnOnce(zbus::Error) -> BusError {
        let socket = self.socket.clone();
        let unit = unit.to_owned();
        move |source| BusError::Call {
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
    ) -> Result<R, BusError>
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
            Err(_) => Err(self.error(method, unit)(timed_out())),
        }
    }

    async fn unit_property<T>(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        name: &'static str,
    ) -> Result<T, BusError>
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
            Err(_) => Err(self.error("Get", unit)(timed_out())),
        }
    }
}

impl Systemd for Bus {
    /// `daemon-reload`.
    async fn reload(&self) -> Result<(), BusError> {
        self.manager_call::<_, ()>("Reload", "", &()).await
    }

    /// The unit file's state (`enabled`, `disabled`, `static`, …).
    async fn unit_file_state(&self, unit: &str) -> Result<String, BusError> {
        self.manager_call("GetUnitFileState", unit, &(unit,)).await
    }

    /// Enables the unit file (`systemctl enable`, without the reload).
    async fn enable(&self, unit: &str) -> Result<(), BusError> {
        // (files, runtime, force) -> (carries_install_info, changes)
        let _: (bool, Vec<(String, String, String)>) = self
            .manager_call("EnableUnitFiles", unit, &(vec![unit], false, true))
            .await?;
        Ok(())
    }

    /// Disables the unit file (`systemctl disable`, without the reload).
    async fn disable(&self, unit: &str) -> Result<(), BusError> {
        // (files, runtime) -> changes
        let _: Vec<(String, String, String)> = self
            .manager_call("DisableUnitFiles", unit, &(vec![unit], false))
            .await?;
        Ok(())
    }

    /// The unit's current state.
    async fn status(&self, unit: &str) -> Result<UnitStatus, BusError> {
        let path: OwnedObjectPath = self.manager_call("LoadUnit", unit, &(unit,)).await?;
        Ok(UnitStatus {
            active_state: self.unit_property(unit, &path, "ActiveState").await?,
            sub_state: self.unit_property(unit, &path, "SubState").await?,
            active_enter_usec: self
                .unit_property(unit, &path, "ActiveEnterTimestamp")
                .await?,
        })
    }

    /// Clears a failed state (and the start rate limit).
    async fn reset_failed(&self, unit: &str) -> Result<(), BusError> {
        self.manager_call::<_, ()>("ResetFailedUnit", unit, &(unit,))
            .await
    }

    /// Queues a start job.
    async fn start(&self, unit: &str) -> Result<JobRef, BusError> {
        let job: OwnedObjectPath = self
            .manager_call("StartUnit", unit, &(unit, "replace"))
            .await?;
        Ok(JobRef(job.as_str().to_owned()))
    }

    /// Queues a restart job (starts the unit if it is not running).
    async fn restart(&self, unit: &str) -> Result<JobRef, BusError> {
        let job: OwnedObjectPath = self
            .manager_call("RestartUnit", unit, &(unit, "replace"))
            .await?;
        Ok(JobRef(job.as_str().to_owned()))
    }

    /// Queues a stop job.
    async fn stop(&self, unit: &str) -> Result<JobRef, BusError> {
        let job: OwnedObjectPath = self
            .manager_call("StopUnit", unit, &(unit, "replace"))
            .await?;
        Ok(JobRef(job.as_str().to_owned()))
    }

    /// Asks systemd to reboot the host (`systemctl reboot`): queues `reboot.target`.
    async fn reboot(&self) -> Result<(), BusError> {
        let _: OwnedObjectPath = self
            .manager_call(
                "StartUnit",
                "reboot.target",
                &("reboot.target", "replace-irreversibly"),
            )
            .await?;
        Ok(())
    }

    /// Whether the job is still queued or running.
    async fn job_pending(&self, job: &JobRef) -> Result<bool, BusError> {
        let proxy = self
            .proxy(&job.0, JOB_INTERFACE)
            .await
            .map_err(self.error("Get", &job.0))?;
        // A finished job's object is gone: reading its State fails with UnknownObject.
        match tokio::time::timeout(CALL_TIMEOUT, proxy.get_property::<String>("State")).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => Ok(false),
            Err(_) => Err(self.error("Get", &job.0)(timed_out())),
        }
    }
}
