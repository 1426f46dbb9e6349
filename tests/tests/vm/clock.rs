//! Fault 10 of the fault matrix (docs/reliability.md): one host's clock jumped an hour
//! forward and back mid-upgrade. Only a VM has a clock of its own (the simulated hosts
//! share the machine's kernel), so the fault lives in this tier.
//!
//! While the upgrade installs on the first host, the second one waits for its turn with
//! its agent connected, holding its lease and watching its `desired`. Its clock is moved an
//! hour forward, kept there past the agent's lease (10 s), and moved back. The agent's
//! lease, timeouts and soak timing run on monotonic clocks, so none of it may notice: the
//! host's `alive` stays the same agent process throughout and after, and the upgrade then
//! goes on to that host and succeeds (asserted by the caller).

use std::time::{Duration, Instant};

use baton_protocol::documents::{Alive, HostOutcomeState};
use baton_protocol::etcd::Client;
use baton_protocol::{HostId, HostKey, Keyspace};
use baton_tests::pki::DockerClientTls;
use baton_tests::vm::Vm;
use batonctl::client::ApiClient;

/// How far the clock jumps, in seconds.
const JUMP: i64 = 3600;

/// How long the clock stays off, and how long `alive` is watched after it is back: past
/// the agent's 10 s lease.
const HELD: Duration = Duration::from_secs(20);

/// Waits until `first` is told in upgrade `id`, then jumps `host`'s clock (the VM
/// `machine`) [`JUMP`] forward, keeps it there [`HELD`], moves it back, and watches `alive`
/// [`HELD`] more. Panics when `host`'s `alive` went away or changed process meanwhile, or
/// when the upgrade ended before `first` was told.
pub async fn jump_while_waiting(
    api: &ApiClient,
    etcd: &Client,
    id: &str,
    first: &str,
    host: &str,
    machine: &Vm,
    tls: &DockerClientTls,
) {
    loop {
        let u = api.upgrade(id).await.expect("upgrade");
        let told = u
            .upgrade
            .hosts
            .iter()
            .any(|(h, o)| h.as_str() == first && o.state == HostOutcomeState::Dispatched);
        if told {
            break;
        }
        assert!(
            !u.upgrade.phase.is_terminal(),
            "{id} ended {:?} before {first} was told: {:?}",
            u.upgrade.phase,
            u.upgrade.reason
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = alive(etcd, host)
        .await
        .unwrap_or_else(|| panic!("{host} has no alive before its clock jumps"));
    let forward = shift(machine, tls, JUMP).await;
    eprintln!("clock of {host} jumped forward: {forward}");
    watch_alive(etcd, host, &before, HELD).await;
    let back = shift(machine, tls, -JUMP).await;
    eprintln!("clock of {host} jumped back: {back}");
    watch_alive(etcd, host, &before, HELD).await;
    eprintln!(
        "{host}'s agent kept its lease and session through its clock's jump (pid {})",
        before.1.pid
    );
}

/// Moves the guest's wall clock by `seconds` (its own `date`, as root in its namespaces);
/// returns the time it was set to.
async fn shift(machine: &Vm, tls: &DockerClientTls, seconds: i64) -> String {
    let script = format!("/bin/date --set=@$(( $(/bin/date +%s) + ({seconds}) ))");
    machine
        .guest_exec(
            tls,
            &[
                "nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--", "/bin/sh", "-c", &script,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{}: move the clock by {seconds} s: {e}", machine.name()))
        .trim()
        .to_owned()
}

/// `host`'s `alive` key: its create revision (a lease that expired and was taken again
/// recreates it) and its document; `None` when it is gone.
async fn alive(etcd: &Client, host: &str) -> Option<(i64, Alive)> {
    let id = HostId::new(host).expect("host id");
    let key = Keyspace::default().host(&id, HostKey::Alive);
    let resp = etcd
        .kv_client()
        .get(key.as_str(), None)
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"));
    let kv = resp.kvs().first()?;
    let doc = serde_json::from_slice(kv.value()).unwrap_or_else(|e| panic!("{key}: {e}"));
    Some((kv.create_revision(), doc))
}

/// Polls `host`'s `alive` for `how_long`: it must stay the key it was (never removed, so
/// the lease held) of the same agent process.
async fn watch_alive(etcd: &Client, host: &str, before: &(i64, Alive), how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let now = alive(etcd, host).await;
        assert!(
            now.as_ref()
                .is_some_and(|(rev, a)| *rev == before.0 && a.pid == before.1.pid),
            "{host}'s alive changed while its clock jumped: {before:?} became {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
