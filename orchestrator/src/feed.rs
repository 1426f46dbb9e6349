//! The fleet as this replica's live page sees it (`GET /v1/stream`): a [`FleetView`] kept
//! current by prefix watches of `hosts/`, `groups/`, `upgrades/` and `active` — the engine's
//! own watch machinery ([`ResumableWatch`] and its forwarder), run on every replica because
//! every replica serves the page — and a watch of the upgrades' audit trails (`events/`,
//! from now on: older events are read through the REST API). Nothing polls.
//!
//! The feed starts with its first subscriber and stops once none has been left for
//! [`IDLE_CHECK`]. A subscriber takes its snapshot and subscribes to the feed's [`Touch`]es
//! under one lock, so it misses no change and sees none twice. A touch only names what
//! changed; the subscriber reads the current state when it sends it, so a burst of changes
//! to one host or upgrade costs one message. A subscriber that falls [`BACKLOG`] touches
//! behind, or a watch that had to read its prefix again, gets a whole snapshot instead.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use baton_protocol::api::{
    EventInfo, FleetSnapshot, HostInfo, HostRemoved, UpgradeEvent, UpgradeInfo,
};
use baton_protocol::documents::{Active, Event, decode};
use baton_protocol::etcd::{Client, ResumableWatch, WatchUpdate};
use baton_protocol::keys::Key;
use baton_protocol::{GroupName, HostId, Keyspace, UpgradeId};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

use crate::api::hosts;
use crate::store;
use crate::view::{FleetView, Part};

/// Touches a subscriber may fall behind by before it is sent a snapshot instead.
pub const BACKLOG: usize = 4096;
/// How often a running feed checks whether anyone still subscribes.
pub const IDLE_CHECK: Duration = Duration::from_secs(60);
/// Upgrades that are over a snapshot carries besides those in progress: the most recent.
pub const RECENT_UPGRADES: usize = 20;
/// Pause before a failed read is tried again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// What a watch of the feed covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// A part of the fleet view.
    Part(Part),
    /// The `active` key.
    Active,
    /// `events/`, from the feed's start on.
    Events,
}

impl Source {
    /// The sources the snapshot needs read before it is taken.
    const LOADED: [Source; 4] = [
        Source::Part(Part::Hosts),
        Source::Part(Part::Groups),
        Source::Part(Part::Upgrades),
        Source::Active,
    ];

    fn prefix(self, keyspace: &Keyspace) -> String {
        match self {
            Source::Part(part) => part.prefix(keyspace),
            Source::Active => keyspace.active(),
            Source::Events => keyspace.events_root(),
        }
    }
}

/// What changed; the subscriber sends its current state.
#[derive(Debug, Clone)]
enum Touch {
    /// One of the host's documents.
    Host(HostId),
    /// The group's maintenance mode (every host of the group shows it).
    Group(GroupName),
    /// The upgrade record, or whether `active` names it.
    Upgrade(UpgradeId),
    /// An event was added to an upgrade's trail.
    Event(Arc<UpgradeEvent>),
    /// A part was read anew (a watch resynchronised after a compaction): send everything.
    Resync,
}

/// One message of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Everything: on (re)connection, and after a resynchronisation.
    Snapshot(FleetSnapshot),
    /// A host as it is now.
    Host(Box<HostInfo>),
    /// A host with no document left.
    HostRemoved(HostRemoved),
    /// An upgrade as it is now.
    Upgrade(Box<UpgradeInfo>),
    /// A new entry of an upgrade's trail.
    Event(UpgradeEvent),
}

/// The replica's live feed (cheap to clone).
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Feed")
            .field("running", &state.running)
            .field("subscribers", &state.subscribers)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: Client,
    keyspace: Keyspace,
    replica: String,
    /// Becomes true when the replica shuts down: streams end, so the server's graceful
    /// shutdown does not wait for them.
    stopping: watch::Receiver<bool>,
    touches: broadcast::Sender<Touch>,
    /// Whether the view is loaded (a wake-up for subscribers; the state says for sure).
    ready: watch::Sender<bool>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    view: FleetView,
    active: Option<UpgradeId>,
    loaded: BTreeSet<Source>,
    running: bool,
    subscribers: usize,
}

impl State {
    fn is_loaded(&self) -> bool {
        Source::LOADED.iter().all(|s| self.loaded.contains(s))
    }

    fn host(&self, id: &HostId) -> Message {
        match self.view.hosts.get(id) {
            Some(docs) => Message::Host(Box::new(hosts::info(&self.view, id, docs))),
            None => Message::HostRemoved(HostRemoved { id: id.clone() }),
        }
    }

    fn upgrade(&self, id: &UpgradeId) -> Option<UpgradeInfo> {
        let upgrade = &self.view.upgrades.get(id)?.value;
        Some(UpgradeInfo::new(
            upgrade.clone(),
            self.active.as_ref() == Some(id),
        ))
    }

    fn snapshot(&self, replica: &str) -> FleetSnapshot {
        let hosts = self
            .view
            .hosts
            .iter()
            .map(|(id, docs)| hosts::info(&self.view, id, docs))
            .collect();
        let mut upgrades: Vec<_> = self.view.upgrades.values().map(|v| &v.value).collect();
        upgrades.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        let recent_from = upgrades.len().saturating_sub(RECENT_UPGRADES);
        let upgrades = upgrades
            .into_iter()
            .enumerate()
            .filter(|(i, u)| *i >= recent_from || !u.phase.is_terminal())
            .filter_map(|(_, u)| self.upgrade(&u.id))
            .collect();
        FleetSnapshot {
            replica: replica.to_owned(),
            version: crate::VERSION.to_owned(),
            hosts,
            upgrades,
        }
    }
}

impl Feed {
    /// The feed of a replica named `replica` reading `keyspace`; it ends its streams when
    /// `stopping` becomes true.
    pub fn new(
        client: Client,
        keyspace: Keyspace,
        replica: String,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let (touches, _) = broadcast::channel(BACKLOG);
        let (ready, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                client,
                keyspace,
                replica,
                stopping,
                touches,
                ready,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A new subscriber (starting the feed if it is not running); it gets its snapshot once
    /// the view is loaded.
    pub fn subscribe(&self) -> Subscription {
        let mut state = self.inner.lock();
        state.subscribers += 1;
        if !state.running {
            state.running = true;
            tokio::spawn(run(self.inner.clone()));
        }
        drop(state);
        Subscription {
            inner: self.inner.clone(),
            ready: self.inner.ready.subscribe(),
            touches: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the view is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self, touch: Touch) {
        // No receiver: nobody to tell.
        let _ = self.touches.send(touch);
    }

    /// Notes `source` as read; the view being complete again after a resynchronisation
    /// sends everything anew.
    fn loaded(&self, state: &mut State, source: Source) {
        let was = state.is_loaded();
        state.loaded.insert(source);
        if state.is_loaded() {
            if was {
                self.touch(Touch::Resync);
            } else {
                self.ready.send_replace(true);
            }
        }
    }

    /// Stops the feed if nobody subscribes; whether it did.
    fn stop_if_unused(&self) -> bool {
        let mut state = self.lock();
        if state.subscribers > 0 {
            return false;
        }
        *state = State::default();
        self.ready.send_replace(false);
        tracing::debug!("live feed stopped: no subscriber");
        true
    }

    /// Reads `prefix` until it succeeds (or the replica stops: `None`).
    async fn read(&self, prefix: &str) -> Option<(Vec<store::Kv>, i64)> {
        loop {
            match store::read_prefix(&self.client, prefix).await {
                Ok(read) => return Some(read),
                Err(error) => tracing::warn!(prefix, %error, "live feed: read failed; retrying"),
            }
            if *self.stopping.borrow() {
                return None;
            }
            tokio::time::sleep(READ_RETRY).await;
        }
    }

    async fn apply(&self, source: Source, update: WatchUpdate) {
        match (source, update) {
            // Like the engine: a watch's snapshot has no per-key revisions; read the part.
            (Source::Part(part), WatchUpdate::Snapshot { .. }) => {
                let Some((kvs, revision)) = self.read(&part.prefix(&self.keyspace)).await else {
                    return;
                };
                let mut state = self.lock();
                state.view.load(&self.keyspace, part, &kvs, revision);
                self.loaded(&mut state, source);
            }
            (Source::Active, WatchUpdate::Snapshot { kvs, .. }) => {
                let key = self.keyspace.active();
                let value = kvs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_slice());
                let mut state = self.lock();
                self.set_active(&mut state, &key, value);
                self.loaded(&mut state, source);
            }
            // Past events are read through the API; only new ones are streamed.
            (Source::Events, WatchUpdate::Snapshot { .. }) => {}
            (source, WatchUpdate::Changes(changes)) => {
                let mut state = self.lock();
                for c in changes {
                    let value = c.value.as_deref();
                    match source {
                        Source::Part(part) => {
                            state
                                .view
                                .change(&self.keyspace, part, &c.key, value, c.mod_revision);
                            match self.keyspace.parse(&c.key) {
                                Ok(Key::Host(host, _)) => self.touch(Touch::Host(host)),
                                Ok(Key::GroupMaintenance(group)) => {
                                    self.touch(Touch::Group(group));
                                }
                                Ok(Key::Upgrade(id) | Key::UpgradeHost(id, _)) => {
                                    self.touch(Touch::Upgrade(id))
                                }
                                _ => {}
                            }
                        }
                        Source::Active => self.set_active(&mut state, &c.key, value),
                        Source::Events => {
                            if let (Some(bytes), Ok(Key::Event(upgrade_id, seq))) =
                                (value, self.keyspace.parse(&c.key))
                                && let Ok(event) = decode::<Event>(&c.key, bytes)
                            {
                                self.touch(Touch::Event(Arc::new(UpgradeEvent {
                                    upgrade_id,
                                    info: EventInfo { seq, event },
                                })));
                            }
                        }
                    }
                }
            }
        }
    }

    /// `active` now holds `value`: the upgrades it named and names are touched.
    fn set_active(&self, state: &mut State, key: &str, value: Option<&[u8]>) {
        if key != self.keyspace.active() {
            return;
        }
        let now = value
            .and_then(|v| decode::<Active>(key, v).ok())
            .map(|a| a.upgrade_id);
        if now == state.active {
            return;
        }
        let before = std::mem::replace(&mut state.active, now.clone());
        for id in [before, now].into_iter().flatten() {
            self.touch(Touch::Upgrade(id));
        }
    }
}

/// Resolves once `stopping` is true (or its sender is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// The feed's task: the watches, until nobody subscribes or the replica stops.
async fn run(inner: Arc<Inner>) {
    let (tx, mut rx) = mpsc::channel::<(Source, WatchUpdate)>(64);
    let mut watches = JoinSet::new();
    for source in Source::LOADED {
        let watch = ResumableWatch::new(inner.client.clone(), source.prefix(&inner.keyspace));
        watches.spawn(crate::engine::forward(watch, source, tx.clone()));
    }
    // Events from now on: a count-only read tells the revision to start after.
    let events = Source::Events.prefix(&inner.keyspace);
    let from = loop {
        match store::revision(&inner.client, &events).await {
            Ok(revision) => break revision + 1,
            Err(error) => {
                tracing::warn!(%error, "live feed: cannot read etcd's revision; retrying")
            }
        }
        if *inner.stopping.borrow() {
            return;
        }
        tokio::time::sleep(READ_RETRY).await;
    };
    let watch = ResumableWatch::resume(inner.client.clone(), events, from);
    watches.spawn(crate::engine::forward(watch, Source::Events, tx));
    let mut idle = tokio::time::interval(IDLE_CHECK);
    idle.tick().await;
    let mut stopping = inner.stopping.clone();
    loop {
        tokio::select! {
            Some((source, update)) = rx.recv() => inner.apply(source, update).await,
            _ = idle.tick() => {
                if inner.stop_if_unused() {
                    return;
                }
            }
            () = stopped(&mut stopping) => return,
        }
    }
}

/// One subscriber: its snapshot, then what changes.
pub struct Subscription {
    inner: Arc<Inner>,
    ready: watch::Receiver<bool>,
    touches: Option<broadcast::Receiver<Touch>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("live", &self.touches.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.subscribers = state.subscribers.saturating_sub(1);
    }
}

/// Touches gathered for one round of messages.
#[derive(Default)]
struct Batch {
    hosts: BTreeSet<HostId>,
    groups: BTreeSet<GroupName>,
    upgrades: BTreeSet<UpgradeId>,
    events: Vec<Arc<UpgradeEvent>>,
    resync: bool,
}

impl Batch {
    fn add(&mut self, touch: Result<Touch, broadcast::error::RecvError>) {
        match touch {
            Ok(Touch::Host(h)) => {
                self.hosts.insert(h);
            }
            Ok(Touch::Group(g)) => {
                self.groups.insert(g);
            }
            Ok(Touch::Upgrade(u)) => {
                self.upgrades.insert(u);
            }
            Ok(Touch::Event(e)) => self.events.push(e),
            Ok(Touch::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => self.resync = true,
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }
}

impl Subscription {
    /// Waits until the feed's view is loaded and returns the snapshot; `None` once the
    /// replica stops.
    pub async fn snapshot(&mut self) -> Option<Message> {
        let mut stopping = self.inner.stopping.clone();
        loop {
            if *stopping.borrow() {
                return None;
            }
            {
                let state = self.inner.lock();
                if state.is_loaded() {
                    self.touches = Some(self.inner.touches.subscribe());
                    return Some(Message::Snapshot(state.snapshot(&self.inner.replica)));
                }
            }
            tokio::select! {
                changed = self.ready.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = stopping.changed() => {}
            }
        }
    }

    /// Waits for the next change, gathers what else changes within `window`, and returns
    /// the messages that tell it (hosts and upgrades as they are now, then the new events
    /// in order); `None` once the replica stops (or before [`Self::snapshot`]).
    pub async fn next(&mut self, window: Duration) -> Option<Vec<Message>> {
        let mut stopping = self.inner.stopping.clone();
        let touches = self.touches.as_mut()?;
        let mut batch = Batch::default();
        tokio::select! {
            first = touches.recv() => batch.add(first),
            () = stopped(&mut stopping) => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            () = stopped(&mut stopping) => return None,
        }
        loop {
            match touches.try_recv() {
                Ok(touch) => batch.add(Ok(touch)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    batch.add(Err(broadcast::error::RecvError::Lagged(n)));
                }
                Err(_) => break,
            }
        }
        Some(messages(&self.inner.lock(), &self.inner.replica, batch))
    }
}

/// The messages that tell what `batch` touched, as `state` is now.
fn messages(state: &State, replica: &str, mut batch: Batch) -> Vec<Message> {
    if batch.resync {
        return vec![Message::Snapshot(state.snapshot(replica))];
    }
    for (id, docs) in &state.view.hosts {
        if docs.group().is_some_and(|g| batch.groups.contains(&g)) {
            batch.hosts.insert(id.clone());
        }
    }
    let mut out: Vec<Message> = batch.hosts.iter().map(|h| state.host(h)).collect();
    out.extend(
        batch
            .upgrades
            .iter()
            .filter_map(|u| state.upgrade(u))
            .map(|u| Message::Upgrade(Box::new(u))),
    );
    out.extend(batch.events.iter().map(|e| Message::Event((**e).clone())));
    out
}

#[cfg(test)]
mod tests {
    use baton_protocol::UpgradePhase;
    use baton_protocol::documents::{HostSpec, SCHEMA_VERSION, Upgrade, encode};

    use super::*;

    fn upgrade(id: &str, created: &str, phase: UpgradePhase) -> Upgrade {
        serde_json::from_value(serde_json::json!({
            "schema_version": SCHEMA_VERSION, "id": id, "bundle": "r@sha256:0", "version": "2.0.0",
            "strategy": {"kind": "daisy-chain"}, "phase": phase, "hosts": {},
            "created_at": created, "updated_at": created,
        }))
        .expect("an upgrade record")
    }

    fn spec(host: &str) -> Vec<u8> {
        encode(&HostSpec {
            schema_version: SCHEMA_VERSION,
            host: HostId::new(host).expect("id"),
            labels: [("group".to_owned(), "edge".to_owned())].into(),
            docker: "unix:///var/run/docker.sock".into(),
            path_map: Default::default(),
            boot_id_file: None,
            kernel_release_file: None,
            container_prefix: None,
            quorum_member: false,
            registered_at: "t".into(),
        })
    }

    #[test]
    fn a_snapshot_carries_the_upgrades_in_progress_and_the_recent_others() {
        let ks = Keyspace::default();
        let mut state = State::default();
        let mut kvs = Vec::new();
        // The oldest is still in progress; 25 more are over.
        let first = upgrade("u-00", "2026-01-01T00:00:00Z", UpgradePhase::Installing);
        kvs.push((ks.upgrade(&first.id), encode(&first), 1));
        for i in 1..=25 {
            let u = upgrade(
                &format!("u-{i:02}"),
                &format!("2026-01-02T00:00:{i:02}Z"),
                UpgradePhase::Succeeded,
            );
            kvs.push((ks.upgrade(&u.id), encode(&u), 1));
        }
        state.view.load(&ks, Part::Upgrades, &kvs, 2);
        state.active = Some(first.id.clone());
        let snap = state.snapshot("orch-a");
        let ids: Vec<&str> = snap
            .upgrades
            .iter()
            .map(|u| u.upgrade.id.as_str())
            .collect();
        assert_eq!(ids.len(), 1 + RECENT_UPGRADES);
        assert_eq!(ids[0], "u-00");
        assert_eq!(ids[1], "u-06");
        assert_eq!(ids.last(), Some(&"u-25"));
        assert!(snap.upgrades[0].active);
        assert!(!snap.upgrades[1].active);
        assert_eq!(snap.replica, "orch-a");
    }

    #[test]
    fn a_batch_tells_each_thing_once_as_it_is_now() {
        let ks = Keyspace::default();
        let mut state = State::default();
        state.view.load(
            &ks,
            Part::Hosts,
            &[
                ("/baton/hosts/h1/spec".into(), spec("h1"), 1),
                ("/baton/hosts/h2/spec".into(), spec("h2"), 1),
                ("/baton/hosts/h3/spec".into(), spec("h3"), 1),
            ],
            1,
        );
        let u = upgrade("u-1", "2026-01-01T00:00:00Z", UpgradePhase::Installing);
        state.view.load(
            &ks,
            Part::Upgrades,
            &[(ks.upgrade(&u.id), encode(&u), 1)],
            1,
        );
        let id = |h: &str| HostId::new(h).expect("id");
        let mut batch = Batch::default();
        batch.add(Ok(Touch::Host(id("h1"))));
        batch.add(Ok(Touch::Host(id("h1"))));
        batch.add(Ok(Touch::Host(id("gone"))));
        batch.add(Ok(Touch::Upgrade(u.id.clone())));
        batch.add(Ok(Touch::Upgrade(u.id.clone())));
        let out = messages(&state, "orch-a", batch);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(&out[0], Message::HostRemoved(r) if r.id.as_str() == "gone"));
        assert!(matches!(&out[1], Message::Host(h) if h.id.as_str() == "h1"));
        assert!(matches!(&out[2], Message::Upgrade(i) if i.upgrade.id == u.id && !i.active));

        // A group's maintenance shows on each of its hosts.
        let mut batch = Batch::default();
        batch.add(Ok(Touch::Group(GroupName::new("edge").expect("group"))));
        let hosts: Vec<String> = messages(&state, "orch-a", batch)
            .iter()
            .map(|m| match m {
                Message::Host(h) => h.id.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(hosts, ["h1", "h2", "h3"]);

        // A subscriber that fell behind gets everything.
        let mut batch = Batch::default();
        batch.add(Ok(Touch::Host(id("h1"))));
        batch.add(Err(broadcast::error::RecvError::Lagged(3)));
        let out = messages(&state, "orch-a", batch);
        assert!(matches!(&out[..], [Message::Snapshot(s)] if s.hosts.len() == 3));
    }
}
