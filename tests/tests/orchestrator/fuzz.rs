//! The API fuzzed from its own OpenAPI document by schemathesis (PyPI), against an
//! orchestrator over TLS with a real etcd, called with an admin token: no request may get a
//! 5xx, no answer may break the document, and no request the document calls valid may be
//! refused (the document states every limit the API enforces).
//!
//! Needs schemathesis: `scripts/install-schemathesis.sh` (which `make test` runs) puts it in
//! /var/cache/baton-venv; `BATON_SCHEMATHESIS` names another.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Orchestrator, config, credentials};
use baton_protocol::api::CreateToken;
use baton_protocol::documents::ApiRole;
use baton_tests::etcd::EtcdServer;

/// Test cases per operation and phase: bounded so both runs take under a minute (about
/// 3,000 requests, 40 s here).
const MAX_EXAMPLES: &str = "100";

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("BATON_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| baton_tests::venv::dir().join("bin/schemathesis"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-schemathesis.sh (or `make deps`), or name it with BATON_SCHEMATHESIS",
        path.display()
    );
    path
}

/// The run's settings: the token from the environment (never on a command line), the test
/// CA, and, for `POST /v1/upgrades`, 422 among the answers a valid request may get: whether
/// a well-formed upgrade can start depends on the fleet (its hosts, their labels) and the
/// registry, not on the document; likewise for setting maintenance windows, whose time
/// zones come from the tz database and whose durations (1 m … 7 d, `90m`, `4h`) no schema
/// pattern states; and for `POST /v1/hosts`, whose array form is refused when it names a
/// host twice (a rule over the items no schema states).
fn settings(ca: &std::path::Path) -> String {
    format!(
        r#"headers = {{ Authorization = "Bearer ${{BATON_FUZZ_TOKEN}}" }}
tls-verify = "{ca}"
request-timeout = 30
seed = 7480

[generation]
max-examples = {MAX_EXAMPLES}

[[operations]]
include-operation-id = "startUpgrade"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-operation-id = "registerHost"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "409", "422"]

[[operations]]
include-operation-id = "setFleetWindow"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "409", "422"]

[[operations]]
include-operation-id = "setGroupWindow"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "409", "422"]
"#,
        ca = ca.display()
    )
}

/// One schemathesis run over the operations `filter` selects; its output, and whether it
/// found nothing.
async fn run(
    bin: &std::path::Path,
    url: &str,
    config: &std::path::Path,
    token: &str,
    filter: &[&str],
    report: &std::path::Path,
) -> (bool, String, u64) {
    let out = tokio::process::Command::new(bin)
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing",
            // One worker: hypothesis parses lambda sources with `ast` while it
            // generates, and CPython before 3.11.8 / 3.12.1 fails that with "AST
            // constructor recursion depth mismatch" when two threads do it at once
            // (CPython gh-106905). Debian 12's Python is one of those.
            "--workers",
            "1",
            "--no-color",
            "--report",
            "ndjson",
        ])
        .args(filter)
        .arg("--report-dir")
        .arg(report)
        .env("BATON_FUZZ_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run schemathesis");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "Test cases:\n  441 generated, …"
    let generated = text
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (out.status.success(), text, generated)
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_no_broken_answer_and_no_valid_request_refused() {
    let bin = schemathesis();
    let etcd = EtcdServer::start().await.expect("etcd");
    let cfg = config(&etcd, "orch-fuzz");
    let creds = credentials(&cfg);
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let dir = etcd.dir().join("schemathesis");
    std::fs::create_dir_all(&dir).expect("dir");
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(
        &config_file,
        settings(creds.ca_file.as_deref().expect("CA")),
    )
    .expect("config");
    // Two runs, so that no upgrade ever finds a host to start on (which would make the
    // orchestrator pull whatever image the fuzzer names from the network): first everything
    // but host registration, on an empty fleet; then everything but starting upgrades.
    let started = Instant::now();
    let mut total = 0;
    // Revocation is left out of both: the fuzzer learns token names from `GET /v1/tokens`
    // and would revoke the one it runs with, after which every request it calls valid is
    // refused. security.rs tests revocation on every route. So is the live stream, an
    // answer that never ends (security.rs and web.rs call it).
    for (i, (name, filter)) in [
        (
            "without host registration",
            ["--exclude-operation-id", "registerHost"],
        ),
        (
            "without starting upgrades",
            ["--exclude-operation-id", "startUpgrade"],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let filter = [
            filter[0],
            filter[1],
            "--exclude-operation-id",
            "revokeToken",
            "--exclude-operation-id",
            "streamFleet",
        ];
        // A token of its own per run.
        let token = orch
            .api
            .create_token(&CreateToken {
                name: format!("fuzzer-{i}-7b1e"),
                role: ApiRole::Admin,
            })
            .await
            .expect("token")
            .token;
        let (ok, output, generated) =
            run(&bin, &orch.url, &config_file, &token, &filter, &dir).await;
        eprintln!("--- schemathesis {name}: {generated} test cases\n{output}");
        assert!(
            ok,
            "schemathesis {name} found problems (above; reports in {})",
            dir.display()
        );
        assert!(
            generated > 100,
            "schemathesis {name} generated only {generated} test cases"
        );
        total += generated;
    }
    eprintln!(
        "TIMING schemathesis: {total} test cases in {:?}",
        started.elapsed()
    );
    orch.stop().await;
}
