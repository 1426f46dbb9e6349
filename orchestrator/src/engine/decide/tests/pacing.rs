//! Table tests of soaks (a batch's hosts succeed only after it soaked, healthy and with
//! its gates passing) and maintenance windows (dispatch only while they are open).

use baton_protocol::GroupName;
use baton_protocol::documents::{Day, Gate, HostHealth, Soak, Window, Windows};

use super::*;

const GATE: &str = "http http://gate/ answers 200";

impl Fx {
    /// A soak of `secs` seconds with one HTTP gate.
    pub(super) fn soak(mut self, secs: u64) -> Self {
        self.upgrade.soak = Some(Soak {
            duration: format!("{secs}s"),
            gates: vec![Gate::Http {
                url: "http://gate/".into(),
                status: 200,
            }],
            batch: None,
            since: None,
            until: None,
        });
        self
    }

    /// Batch `b` soaks since T0 + `since` for the soak's length.
    pub(super) fn soaking(mut self, b: u32, since: u64) -> Self {
        let soak = self.upgrade.soak.as_mut().expect("a soak");
        let length = humantime::parse_duration(&soak.duration).expect("length");
        soak.batch = Some(b);
        soak.since = Some(humantime::format_rfc3339_millis(at(since)).to_string());
        soak.until = Some(humantime::format_rfc3339_millis(at(since) + length).to_string());
        self
    }

    /// `h` is done on 2.0.0, with its re-run health checks reported (`None`: not yet).
    pub(super) fn done(self, h: &str, healthy: Option<bool>) -> Self {
        let fx = self.host(h, O::Dispatched).status(h, H::Done);
        match healthy {
            Some(healthy) => fx.health(h, healthy),
            None => fx,
        }
    }

    /// `h`'s agent reports its re-run health checks on the status it has.
    pub(super) fn health(mut self, h: &str, healthy: bool) -> Self {
        if let Some(s) = self
            .view
            .hosts
            .get_mut(&id(h))
            .and_then(|d| d.status.as_mut())
        {
            s.value.health = Some(HostHealth {
                healthy,
                message: if healthy {
                    String::new()
                } else {
                    "unit baton-echo inactive".into()
                },
                since: T0.into(),
            });
        }
        self
    }

    /// The engine's gate rounds for the soak under way: the first failure, the last pass.
    pub(super) fn gate_rounds(mut self, failure: Option<&str>, passed: Option<u64>) -> Self {
        let soak = self.upgrade.soak.as_ref().expect("a soak");
        self.gates = Some(GateState {
            batch: soak.batch.expect("soaking"),
            since: soak.since.clone().expect("since"),
            failure: failure.map(str::to_owned),
            passed: passed.map(at),
        });
        self
    }

    /// Windows for the fleet (`None` group) or a group: Mondays 10:00 UTC for 1 h.
    fn window(mut self, group: Option<&str>) -> Self {
        let doc = Versioned {
            value: Windows {
                schema_version: SCHEMA_VERSION,
                windows: vec![Window {
                    days: vec![Day::Mon],
                    start: "10:00".into(),
                    duration: "1h".into(),
                    time_zone: "UTC".into(),
                }],
                reason: String::new(),
                since: T0.into(),
            },
            mod_revision: 9,
        };
        match group {
            None => self.view.fleet_windows = Some(doc),
            Some(g) => {
                self.view
                    .group_windows
                    .insert(GroupName::new(g).expect("group"), doc);
            }
        }
        self
    }

    /// `h` carries the label `group=<g>`.
    fn in_group(mut self, h: &str, g: &str) -> Self {
        let spec = baton_protocol::documents::HostSpec {
            schema_version: SCHEMA_VERSION,
            host: id(h),
            labels: [("group".to_owned(), g.to_owned())].into(),
            docker: "unix:///var/run/docker.sock".into(),
            path_map: BTreeMap::new(),
            boot_id_file: None,
            kernel_release_file: None,
            container_prefix: None,
            quorum_member: false,
            registered_at: T0.into(),
        };
        self.view.hosts.entry(id(h)).or_default().spec = Some(Versioned {
            value: spec,
            mod_revision: 4,
        });
        self
    }
}

pub(super) fn ts(secs: u64) -> String {
    humantime::format_rfc3339_millis(at(secs)).to_string()
}

fn pairs() -> Fx {
    installing_on_2(Fx::new(
        rolling(2, 0, false, 0),
        &[("h1", 0), ("h2", 0), ("h3", 1), ("h4", 1)],
    ))
    .soak(30)
}

#[test]
fn soak_table() {
    let until = format!("soak batch 0 until {}", ts(31));
    let cases: Vec<(&str, Fx, Vec<String>)> = vec![
        (
            "a done host waits for its batch's soak instead of succeeding",
            pairs().done("h1", Some(true)).host("h2", O::Dispatched),
            vec![],
        ),
        (
            "once the whole batch is done, it starts soaking; nothing new is dispatched",
            pairs().done("h1", Some(true)).done("h2", None),
            vec![until.clone()],
        ),
        (
            "while it soaks, healthy and gates passing, it waits",
            pairs()
                .done("h1", Some(true))
                .done("h2", Some(true))
                .soaking(0, 1)
                .gate_rounds(None, Some(20))
                .at(20),
            vec![],
        ),
        (
            "a failing gate fails the batch's hosts, then max_failures halts",
            pairs()
                .done("h1", Some(true))
                .done("h2", Some(true))
                .soaking(0, 1)
                .gate_rounds(Some("GET http://gate/ answered 503, expected 200"), Some(5))
                .at(10),
            vec![
                "record h1 Failed".into(),
                "record h2 Failed".into(),
                "soak over".into(),
            ],
        ),
        (
            "an unhealthy host fails alone",
            pairs()
                .done("h1", Some(true))
                .done("h2", Some(false))
                .soaking(0, 1)
                .at(10),
            vec!["record h2 Failed".into(), "soak over".into()],
        ),
        (
            "past its end, it waits for a gate round started after the end",
            pairs()
                .done("h1", Some(true))
                .done("h2", Some(true))
                .soaking(0, 1)
                .gate_rounds(None, Some(29))
                .at(33),
            vec![],
        ),
        (
            "past its end with every check passing, the batch succeeds",
            pairs()
                .done("h1", Some(true))
                .done("h2", Some(true))
                .soaking(0, 1)
                .gate_rounds(None, Some(32))
                .at(33),
            vec![
                "record h1 Succeeded".into(),
                "record h2 Succeeded".into(),
                "soak over".into(),
            ],
        ),
        (
            "a host that never reports its re-run checks fails after the grace",
            pairs()
                .done("h1", Some(true))
                .done("h2", None)
                .soaking(0, 1)
                .gate_rounds(None, Some(95))
                .at(95),
            vec!["record h2 Failed".into(), "soak over".into()],
        ),
        (
            "after the soak the next batch is dispatched",
            pairs().host("h1", O::Succeeded).host("h2", O::Succeeded),
            vec!["dispatch h3".into(), "dispatch h4".into()],
        ),
        (
            "the last batch soaks before the upgrade succeeds",
            pairs()
                .host("h1", O::Succeeded)
                .host("h2", O::Succeeded)
                .done("h3", Some(true))
                .done("h4", Some(true)),
            vec![format!("soak batch 1 until {}", ts(31))],
        ),
    ];
    for (name, fx, want) in cases {
        let got: Vec<String> = fx.decide().iter().map(line).collect();
        assert_eq!(got, want, "{name}");
    }
    // Failures past max_failures halt on the next pass, naming the gate.
    let mut failed = pairs();
    for h in ["h1", "h2"] {
        failed = failed.host(h, O::Failed);
    }
    assert_eq!(
        failed.decide().iter().map(line).collect::<Vec<_>>(),
        ["phase Failed"]
    );
}

#[test]
fn gate_failures_name_the_gate_and_soak_success_says_so() {
    let fx = pairs()
        .done("h1", Some(true))
        .done("h2", Some(true))
        .soaking(0, 1)
        .gate_rounds(Some(&format!("{GATE}: GET answered 503")), Some(5))
        .at(10);
    let actions = fx.decide();
    let Action::Record { reason, .. } = &actions[0] else {
        panic!("{actions:?}");
    };
    assert!(
        reason.contains("soak of batch 0 failed: gate http http://gate/"),
        "{reason}"
    );
    // A gate round of an earlier soak does not count for this one.
    let mut stale = fx.clone();
    if let Some(g) = stale.gates.as_mut() {
        g.since = ts(0);
    }
    assert!(stale.decide().is_empty());
}

#[test]
fn window_table() {
    // 2026-01-05 is a Monday; T0 is Thursday 2026-01-01 00:00 UTC.
    let monday_10 = 4 * 86_400 + 10 * 3600;
    let cases: Vec<(&str, Fx, Vec<String>)> = vec![
        (
            "outside the fleet's window nothing is dispatched; the record says until when",
            installing_on_2(four(rolling(1, 0, false, 0))).window(None),
            vec![format!("wait for window {}", ts(monday_10))],
        ),
        (
            "already waiting for the same opening: nothing to write",
            {
                let mut fx = installing_on_2(four(rolling(1, 0, false, 0))).window(None);
                fx.upgrade.waiting_for_window = Some(baton_protocol::documents::WindowWait {
                    since: T0.into(),
                    next_opening: Some(ts(monday_10)),
                });
                fx
            },
            vec![],
        ),
        (
            "inside it, the batch is dispatched and the wait ends",
            {
                let mut fx = installing_on_2(four(rolling(1, 0, false, 0)))
                    .window(None)
                    .at(monday_10 + 60);
                fx.upgrade.waiting_for_window = Some(baton_protocol::documents::WindowWait {
                    since: T0.into(),
                    next_opening: Some(ts(monday_10)),
                });
                fx
            },
            vec!["window open".into(), "dispatch h1".into()],
        ),
        (
            "a dispatched host finishes after the window closed",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .window(None)
                .host("h1", O::Dispatched)
                .status("h1", H::Done)
                .at(monday_10 + 2 * 3600),
            vec![
                "record h1 Succeeded".into(),
                format!("wait for window {}", ts(monday_10 + 7 * 86_400)),
            ],
        ),
        (
            "a group's window holds only its hosts",
            installing_on_2(Fx::new(rolling(2, 0, false, 0), &[("h1", 0), ("h2", 0)]))
                .in_group("h1", "edge")
                .in_group("h2", "core")
                .window(Some("edge")),
            vec![
                format!("wait for window {}", ts(monday_10)),
                "dispatch h2".into(),
            ],
        ),
    ];
    for (name, fx, want) in cases {
        let got: Vec<String> = fx.decide().iter().map(line).collect();
        assert_eq!(got, want, "{name}");
    }
}
