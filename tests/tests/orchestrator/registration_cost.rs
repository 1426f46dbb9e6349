//! What registering a host costs as the fleet grows, against a real etcd with TLS and
//! authentication and the orchestrator managing the hosts' etcd identities: the time per host
//! of the registrations around the 100th and the 2,000th host, one request per host and in
//! bulk; and, for reference, what making a host's etcd identity (user, role, permissions —
//! which registration no longer does; the host's first downloader job does) costs around
//! the 100th and the 500th identity (making 2,000 takes etcd many minutes). Prints figures
//! and asserts nothing about them (timings belong to benchmarks):
//! `cargo test -p baton-tests --test orchestrator registration_cost -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use crate::support::{Orchestrator, config};
use baton_protocol::api::{RegisterHost, RegisteredHost};
use baton_protocol::documents::HostSpec;
use baton_protocol::etcd::auth;
use baton_protocol::{HostId, Keyspace};
use baton_tests::etcd::EtcdServer;
use batonctl::client::ApiClient;

/// Hosts timed at each fleet size.
const WINDOW: usize = 50;

fn registration(i: usize) -> RegisterHost {
    RegisterHost {
        id: format!("host-{i:05}"),
        labels: [("group".to_owned(), format!("g{}", i % 10))].into(),
        docker: "unix:///var/run/docker.sock".to_owned(),
        path_map: Default::default(),
        boot_id_file: None,
        kernel_release_file: None,
        container_prefix: None,
        quorum_member: false,
    }
}

/// Registers hosts `range` one request each; the time per host.
async fn one_by_one(api: &ApiClient, range: std::ops::Range<usize>) -> Duration {
    let n = range.len();
    let started = Instant::now();
    for i in range {
        let _: HostSpec = api
            .post("/v1/hosts", &registration(i))
            .await
            .expect("register");
    }
    started.elapsed() / u32::try_from(n).expect("count")
}

#[tokio::test]
#[ignore = "prints registration figures; run by hand"]
async fn registration_cost_per_host_at_100_and_2000_hosts() {
    let etcd = EtcdServer::start_secure(&[]).await.expect("etcd");
    let orch = Orchestrator::start(config(&etcd, "r1")).await;
    orch.wait_role("leader", Duration::from_secs(30)).await;
    let api = &orch.api;

    one_by_one(api, 0..100 - WINDOW).await;
    let at_100 = one_by_one(api, 100 - WINDOW..100).await;
    println!(
        "registration: one_by_one_ms_per_host_at_100={:.2}",
        ms(at_100)
    );
    one_by_one(api, 100..2000 - WINDOW).await;
    let at_2000 = one_by_one(api, 2000 - WINDOW..2000).await;
    println!(
        "registration: one_by_one_ms_per_host_at_2000={:.2}",
        ms(at_2000)
    );

    // In bulk: hosts 2,000 to 3,999 in two requests of 1,000.
    for start in [2000, 3000] {
        let body: Vec<RegisterHost> = (start..start + 1000).map(registration).collect();
        let started = Instant::now();
        let answers: Vec<RegisteredHost> = api.post("/v1/hosts", &body).await.expect("bulk");
        assert_eq!(answers.len(), 1000);
        println!(
            "registration: bulk_ms_per_host_at_{}={:.3}",
            start + 1000,
            ms(started.elapsed() / 1000)
        );
    }
    orch.stop().await;

    // The etcd identity of a host, made straight through etcd as root.
    let root = etcd.client().await.expect("root client");
    let ks = Keyspace::default();
    let identities = async |range: std::ops::Range<usize>| -> Duration {
        let n = range.len();
        let started = Instant::now();
        for i in range {
            let host = HostId::new(format!("host-{i:05}")).expect("host id");
            auth::issue_host_credential(&root, &ks, &host, format!("password-{i}"))
                .await
                .expect("identity");
        }
        started.elapsed() / u32::try_from(n).expect("count")
    };
    identities(0..100 - WINDOW).await;
    let at_100 = identities(100 - WINDOW..100).await;
    println!(
        "registration: identity_ms_per_host_at_100={:.2}",
        ms(at_100)
    );
    identities(100..500 - WINDOW).await;
    let at_500 = identities(500 - WINDOW..500).await;
    println!(
        "registration: identity_ms_per_host_at_500={:.2}",
        ms(at_500)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
