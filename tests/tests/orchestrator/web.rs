//! The fleet page in a real browser: Debian's headless Chromium, driven through WebDriver
//! (its chromedriver, with fantoccini), against the simulated fleet during a real upgrade —
//! real etcd (TLS and authentication on), registry, Docker Engine, downloader job and
//! agents — with the orchestrator serving the page over https (the test PKI; the browser
//! is told to accept its certificate).
//!
//! 1. A forged token is refused on the sign-in form; signed in with an operator's token
//!    (kept in the tab's sessionStorage only), the page shows four fresh hosts in two
//!    zones; an upgrade to bundle 2.0.0, rolling one host at a time, is started through
//!    the API.
//! 2. Without a reload, the hosts' tiles change state as the agents report (every host's
//!    tile goes through several states), and a screenshot is taken mid-upgrade
//!    (`<target>/tmp/web-page.png`; docs/images/web-page.png is one).
//! 3. Pause on the page pauses the upgrade: the record in etcd says `Paused`, with the
//!    page's reason, and the page shows it.
//! 4. A second replica starts on the same address and the first stops (as in a
//!    self-update): the page reconnects by itself, to the new replica, still unreloaded.
//! 5. Resume and then Abort on the page: etcd says `Installing`, then `Aborted`.
//!
//! Needs `make deps` (chromium, chromium-driver) and `make static bundle-agents` (which
//! `make test` runs first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Orchestrator, SimFleet};
use baton_protocol::api::{CreateToken, UpgradeInfo};
use baton_protocol::documents::{ApiRole, Upgrade};
use baton_protocol::etcd::{self, Client};
use baton_protocol::{Keyspace, UpgradeId, UpgradePhase};
use baton_tests::bundles::target_dir;
use baton_tests::registration::registration;
use fantoccini::Locator;
use serde_json::{Value, json};

/// Longest the test waits for any one thing the page should show.
const TIMEOUT: Duration = Duration::from_secs(240);
/// The upgrade.
const UPGRADE: &str = "u-web";

/// `name` on the PATH, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Chromium and its WebDriver server, or a failure saying how to get them.
fn browser_binaries() -> (PathBuf, PathBuf) {
    let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
    let driver = on_path("chromedriver");
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "the browser test needs Debian's headless Chromium and its WebDriver server; missing: {}. \
             Run `make deps` (scripts/install-deps.sh installs the chromium and chromium-driver packages)",
            [("chromium", c.is_none()), ("chromedriver", d.is_none())]
                .iter()
                .filter(|(_, missing)| *missing)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
}

/// A headless Chromium session through a chromedriver of its own; both (and every process
/// they started) are killed when it drops, whatever happened.
struct Browser {
    client: fantoccini::Client,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let (chromium, chromedriver) = browser_binaries();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // A group of its own: the browser's processes are killed with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", chromedriver.display()))
        };
        let profile = tempfile::tempdir().expect("profile folder");
        let capabilities = json!({
            "browserName": "chrome",
            // The orchestrator's certificate is the test PKI's.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,980", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver on {url} gave no browser session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Clicks the element `css`, once it is there and shown.
    async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    panic!("{css} could not be clicked within 10 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// What the page shows now: the phase, the connection, the server and each tile's state.
    async fn seen(&self) -> Seen {
        let v = self
            .js(
                "return {
                    phase: (document.getElementById('phase') || {dataset: {}}).dataset.phase || null,
                    conn: document.getElementById('conn').dataset.state,
                    server: document.getElementById('server').textContent,
                    marker: window.batonTestMarker || null,
                    tiles: Array.from(document.querySelectorAll('.tile')).map(t => [t.dataset.host, t.dataset.state]),
                };",
            )
            .await;
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        Seen {
            phase: text("phase"),
            conn: text("conn").unwrap_or_default(),
            server: text("server").unwrap_or_default(),
            marker: text("marker"),
            tiles: v["tiles"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| Some((t[0].as_str()?.to_owned(), t[1].as_str()?.to_owned())))
                .collect(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's Chromium runs in chromedriver's process group.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

#[derive(Debug, Clone, Default)]
struct Seen {
    phase: Option<String>,
    conn: String,
    server: String,
    marker: Option<String>,
    tiles: BTreeMap<String, String>,
}

/// Every state each host's tile showed, in order, as the page was watched.
#[derive(Debug, Default)]
struct History(BTreeMap<String, Vec<String>>);

impl History {
    fn note(&mut self, seen: &Seen) {
        for (host, state) in &seen.tiles {
            let states = self.0.entry(host.clone()).or_default();
            if states.last() != Some(state) {
                states.push(state.clone());
            }
        }
    }
}

/// Watches the page (noting every tile's state) until `done` says yes; fails naming `what`.
async fn watch_until(
    browser: &Browser,
    history: &mut History,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let started = Instant::now();
    loop {
        let seen = browser.seen().await;
        history.note(&seen);
        if done(&seen) {
            eprintln!(
                "[{:>6.1}s] the page shows {what}",
                started.elapsed().as_secs_f64()
            );
            return seen;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the page did not show {what} within {TIMEOUT:?}; it shows {seen:?}; tiles went {:?}",
            history.0
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The upgrade record as etcd holds it.
async fn stored(client: &Client) -> Upgrade {
    let ks = Keyspace::default();
    let id = UpgradeId::new(UPGRADE).expect("id");
    etcd::read::<Upgrade>(client, &ks.upgrade(&id))
        .await
        .expect("read the upgrade")
        .expect("the upgrade exists")
        .value
}

/// Waits until etcd's record is in `phase`.
async fn etcd_phase(client: &Client, phase: UpgradePhase) -> Upgrade {
    let started = Instant::now();
    loop {
        let u = stored(client).await;
        if u.phase == phase {
            return u;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "etcd: {UPGRADE} is {:?}, not {phase:?}: {:?}",
            u.phase,
            u.reason
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn save_screenshot(png: &[u8]) -> PathBuf {
    let dir = target_dir().join("tmp");
    std::fs::create_dir_all(&dir).expect("target/tmp");
    let path = dir.join("web-page.png");
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

const DISRUPTED: [&str; 3] = ["Updating", "Rebooting", "Verifying"];

#[tokio::test]
async fn the_fleet_page_follows_an_upgrade_live_and_pauses_it() {
    // Before anything starts: a missing browser says how to get one.
    browser_binaries();
    let test_started = Instant::now();
    let sim = SimFleet::start(4).await;
    let client = sim.etcd.client().await.expect("etcd client");
    let (bundle, images) = sim.sample_bundle("2.0.0").await;

    let orch = Orchestrator::start(sim.config("orch-web-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let admin = orch.api.clone();
    for (i, host) in sim.fleet.hosts().iter().enumerate() {
        let zone = if i < 2 { "a" } else { "b" };
        admin
            .register(&registration(host, &[("group", "edge"), ("zone", zone)]))
            .await
            .expect("register");
    }
    let hosts: BTreeSet<String> = sim
        .fleet
        .hosts()
        .iter()
        .map(|h| h.name().to_owned())
        .collect();
    let operator = admin
        .create_token(&CreateToken {
            name: "web-operator".into(),
            role: ApiRole::Operator,
        })
        .await
        .expect("operator token")
        .token;
    eprintln!(
        "TIMING fleet, bundle and orchestrator up in {:?}",
        test_started.elapsed()
    );

    // --- 1. The page, served without a credential; everything else needs the token.
    let (status, page) = batonctl::client::ApiClient::with(
        &orch.url,
        &batonctl::client::Credentials {
            ca_file: crate::support::credentials(&sim.config("x")).ca_file,
            ..Default::default()
        },
    )
    .expect("client")
    .raw("GET".parse().unwrap(), "/", None)
    .await
    .expect("GET /");
    assert_eq!(status.as_u16(), 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>Baton fleet</title>"));

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/", orch.url))
        .await
        .expect("open the page");
    let token_box = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#token"))
        .await
        .expect("the sign-in form");
    // A token the server does not know is refused, and the page says why.
    let forged = format!("baton_web-operator_{}", "0".repeat(64));
    token_box.send_keys(&forged).await.expect("type a token");
    browser.click("#login-submit").await;
    let started = Instant::now();
    loop {
        let error = browser
            .js("return document.getElementById('login-error').textContent;")
            .await;
        if error.as_str().is_some_and(|e| e.contains("not valid")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a forged token was not refused on the page: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .client
        .find(Locator::Css("#token"))
        .await
        .expect("the sign-in form again")
        .send_keys(&operator)
        .await
        .expect("type the token");
    browser.click("#login-submit").await;
    // Set after the page loaded: a reload would lose it.
    browser
        .js("window.batonTestMarker = 'unreloaded'; return null;")
        .await;
    let mut history = History::default();
    let seen = watch_until(&browser, &mut history, "the four hosts, live", |s| {
        s.conn == "live" && s.tiles.keys().cloned().collect::<BTreeSet<_>>() == hosts
    })
    .await;
    assert!(seen.server.starts_with("orch-web-a"), "{}", seen.server);
    // The token is kept in this tab only: no cookie, nothing in localStorage, not in the URL.
    let kept = browser
        .js("return [sessionStorage.getItem('baton.token'), document.cookie, localStorage.length, location.href];")
        .await;
    assert_eq!(kept[0], json!(operator));
    assert_eq!(kept[1], json!(""));
    assert_eq!(kept[2], json!(0));
    assert!(!kept[3].to_string().contains("baton_"), "{kept}");
    let zones = browser
        .js("return Array.from(document.querySelectorAll('.zone')).map(z => z.dataset.zone);")
        .await;
    assert_eq!(zones, json!(["a", "b"]));

    admin
        .post::<_, UpgradeInfo>(
            "/v1/upgrades",
            &json!({"id": UPGRADE, "image": bundle,
                    "strategy": {"kind": "rolling", "batch": {"count": 1}, "zone_label": "zone"}}),
        )
        .await
        .expect("start the upgrade");

    // --- 2. Hosts change state on the page; a screenshot once one is done and another is
    // being installed.
    let seen = watch_until(
        &browser,
        &mut history,
        "a host done, another installing",
        |s| {
            s.phase.as_deref() == Some("Installing")
                && s.tiles.values().any(|st| st == "Done")
                && s.tiles.values().any(|st| DISRUPTED.contains(&st.as_str()))
        },
    )
    .await;
    let png = browser.client.screenshot().await.expect("screenshot");
    let shot = save_screenshot(&png);
    eprintln!("SCREENSHOT of the page mid-upgrade: {}", shot.display());
    eprintln!("tiles so far: {:?}", history.0);
    assert_eq!(seen.marker.as_deref(), Some("unreloaded"));

    // --- 3. Pause from the page.
    browser.click("#pause").await;
    let paused = etcd_phase(&client, UpgradePhase::Paused).await;
    assert_eq!(
        paused.reason.as_deref(),
        Some("paused by operator: from the fleet page"),
        "{paused:?}"
    );
    watch_until(&browser, &mut history, "the upgrade paused", |s| {
        s.phase.as_deref() == Some("Paused")
    })
    .await;

    // --- 4. Another replica on the same address, and the first one gone: the page
    // reconnects by itself.
    let addr = orch
        .url
        .trim_start_matches("https://")
        .parse()
        .expect("addr");
    // Its socket listens from here on (its `/healthz` cannot be told from the first one's
    // until that one is gone).
    let successor = Orchestrator::start_at(sim.config("orch-web-b"), addr).await;
    orch.stop().await;
    successor.wait_role("leader", Duration::from_secs(20)).await;
    let seen = watch_until(&browser, &mut history, "the new replica, live", |s| {
        s.conn == "live" && s.server.starts_with("orch-web-b")
    })
    .await;
    assert_eq!(
        seen.marker.as_deref(),
        Some("unreloaded"),
        "the page reloaded"
    );
    assert_eq!(seen.phase.as_deref(), Some("Paused"));

    // --- 5. Resume, then abort, from the page.
    browser.click("#resume").await;
    etcd_phase(&client, UpgradePhase::Installing).await;
    watch_until(&browser, &mut history, "the upgrade resumed", |s| {
        s.phase.as_deref() == Some("Installing")
    })
    .await;
    browser.click("#abort").await;
    browser.click("#abort-confirm").await;
    let aborted = etcd_phase(&client, UpgradePhase::Aborted).await;
    assert_eq!(
        aborted.reason.as_deref(),
        Some("aborted by operator: from the fleet page")
    );
    let seen = watch_until(&browser, &mut history, "the upgrade aborted", |s| {
        s.phase.as_deref() == Some("Aborted")
    })
    .await;
    assert_eq!(
        seen.marker.as_deref(),
        Some("unreloaded"),
        "the page reloaded"
    );

    // Every tile changed without a reload; one at least went through the whole install.
    eprintln!("tiles went: {:?}", history.0);
    for (host, states) in &history.0 {
        assert!(states.len() >= 2, "{host}'s tile never changed: {states:?}");
    }
    assert!(
        history.0.values().any(|states| {
            states.iter().any(|s| DISRUPTED.contains(&s.as_str()))
                && states.last().map(String::as_str) == Some("Done")
        }),
        "no tile showed a host being installed and then done: {:?}",
        history.0
    );
    eprintln!("TIMING browser test: {:?}", test_started.elapsed());
    drop(browser);
    successor.stop().await;
    drop(images);
    sim.fleet.destroy().expect("fleet cleanup");
}
