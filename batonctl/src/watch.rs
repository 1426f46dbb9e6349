//! `batonctl upgrade watch`: polls the upgrade and the hosts, prints a line per change
//! (what to print is [`display::watch_lines`](crate::display::watch_lines)) and, after
//! [`QUIET_PROGRESS`] without one, where the upgrade stands; rides out a short API outage (an orchestrator restart or self-update), and ends with the upgrade.

use std::time::{Duration, Instant, SystemTime};

use baton_protocol::UpgradePhase;

use crate::client::{ApiClient, ClientError};
use crate::display;
use crate::error::CtlError;

/// How long nothing may change before `watch` says where the upgrade stands.
pub const QUIET_PROGRESS: Duration = Duration::from_secs(30);

/// How long `watch` waits for an API that stopped answering (an orchestrator restart, or a
/// self-update's hand-over, about a second) before it gives up.
pub const WATCH_UNREACHABLE: Duration = Duration::from_secs(60);

/// Prints progress until the upgrade ends; whether it succeeded.
pub async fn watch(api: &ApiClient, id: &str, interval: Duration) -> Result<bool, CtlError> {
    let mut seen = display::Watched::default();
    let mut unreachable_since: Option<Instant> = None;
    // The last change printed, and the last progress line.
    let mut last_change = Instant::now();
    let mut last_note = Instant::now();
    loop {
        let polled: Result<_, ClientError> =
            async { Ok((api.upgrade(id).await?, api.hosts().await?)) }.await;
        let at = humantime::format_rfc3339_seconds(SystemTime::now());
        let (upgrade, hosts) = match polled {
            Ok(answer) => {
                unreachable_since = None;
                answer
            }
            Err(e) if e.is_unreachable() => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    println!(
                        "{at} the API does not answer ({e}); retrying for up to {}s",
                        WATCH_UNREACHABLE.as_secs()
                    );
                    Instant::now()
                });
                if since.elapsed() > WATCH_UNREACHABLE {
                    return Err(CtlError::Unreachable {
                        secs: WATCH_UNREACHABLE.as_secs(),
                        source: e,
                    });
                }
                tokio::time::sleep(interval).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (lines, now) = display::watch_lines(&seen, &upgrade, &hosts);
        if !lines.is_empty() {
            last_change = Instant::now();
            last_note = last_change;
        } else if last_note.elapsed() >= QUIET_PROGRESS {
            println!(
                "{at} {}",
                display::progress_line(&upgrade, last_change.elapsed())
            );
            last_note = Instant::now();
        }
        for line in lines {
            println!("{at} {line}");
        }
        seen = now;
        if upgrade.upgrade.phase.is_terminal() {
            return Ok(upgrade.upgrade.phase == UpgradePhase::Succeeded);
        }
        tokio::time::sleep(interval).await;
    }
}
