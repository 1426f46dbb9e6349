//! systemd notifications (`Type=notify` units): READY once the agent's etcd session is up,
//! WATCHDOG pings while it runs, STOPPING on shutdown. A no-op outside systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use baton_protocol::timer::Timer;

/// Sends one notification (`READY=1`, `WATCHDOG=1`, …) if `NOTIFY_SOCKET` is set.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
    } else {
        socket.send_to(message.as_bytes(), &path)
    };
    if let Err(error) = result {
        tracing::warn!(%error, message, "sd_notify failed");
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval, forever; spawn it. It sleeps on a timerfd: one
/// wake-up a ping, not the up to three of tokio's timer.
pub async fn watchdog(interval: Duration) {
    loop {
        notify("WATCHDOG=1");
        Timer::Os.sleep(interval / 2).await;
    }
}
